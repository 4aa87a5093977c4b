"""Tests of evaluation.segment and the predict.py / ``python -m evaluation.export`` scripts."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import configs
from common.errors import InputError
from evaluation import segment
from evaluation.metrics import dice_per_class
from tests import _eval_data as ed

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
CFG = configs.get_config("synthetic")


def test_segment_file_oracle_and_header(tmp_path):
    label, img = ed.write_raw(tmp_path / "in.nii.gz")
    # the oracle reads label / 3 from the normalized image: (x - P1) / (P99 - P1) maps 50..850 to 0..1
    labels = segment.segment_file(ed.oracle_predictor, CFG, tmp_path / "in.nii.gz", tmp_path / "out.nii.gz")
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == img.shape and out.get_data_dtype() == np.int16
    np.testing.assert_array_equal(out.affine, img.affine)
    assert out.header.get_zooms() == img.header.get_zooms()
    assert out.header["descrip"] == img.header["descrip"]
    assert out.header.get_qform(coded=True)[1] == 1 and out.header.get_sform(coded=True)[1] == 1
    np.testing.assert_array_equal(np.asarray(out.dataobj), labels)
    assert np.nanmean(dice_per_class(label, labels, 4)[1:]) > 0.9


def test_read_input_errors(tmp_path):
    _, img = ed.write_raw(tmp_path / "ok.nii.gz")
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data[..., 0], img.affine), str(tmp_path / "2d.nii.gz"))
    with pytest.raises(InputError, match="2 dimensions"):
        segment.read_input_volume(tmp_path / "2d.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(InputError, match="--channel"):
        segment.read_input_volume(tmp_path / "4d.nii.gz")
    assert segment.read_input_volume(tmp_path / "4d.nii.gz", channel=1)[0].shape == data.shape
    with pytest.raises(InputError, match="--channel=2"):
        segment.read_input_volume(tmp_path / "4d.nii.gz", channel=2)
    bad = data.copy()
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, img.affine), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(InputError, match="NaN"):
        segment.read_input_volume(tmp_path / "nan.nii.gz")
    zero = nib.Nifti1Image(data, img.affine)
    zero.header["pixdim"][1:4] = [1.0, 0.0, 1.0]
    nib.save(zero, str(tmp_path / "zero.nii.gz"))
    with pytest.raises(InputError, match="spacing"):
        segment.read_input_volume(tmp_path / "zero.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti file at all"))
    with pytest.raises(InputError, match="cannot read"):
        segment.read_input_volume(tmp_path / "junk.nii.gz")
    nib.save(nib.Nifti1Image(np.full(data.shape, 7.0, np.float32), img.affine), str(tmp_path / "const.nii.gz"))
    with pytest.raises(InputError, match=r"const\.nii\.gz: image intensities are constant"):
        segment.segment_file(ed.oracle_predictor, CFG, tmp_path / "const.nii.gz", tmp_path / "c_out.nii.gz")
    assert not (tmp_path / "c_out.nii.gz").exists()
    raw = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="trunc.nii.gz"):
        segment.read_input_volume(tmp_path / "trunc.nii.gz")


def test_plan_outputs(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("b.nii.gz", "a.nii", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"")
    jobs = segment.plan_outputs(tmp_path / "in", tmp_path / "out")
    assert [(s.name, d) for s, d, _ in jobs] == [("a.nii", tmp_path / "out" / "a.nii"),
                                              ("b.nii.gz", tmp_path / "out" / "b.nii.gz")]
    assert segment.plan_outputs(tmp_path / "in" / "a.nii", tmp_path)[0][1] == tmp_path / "a.nii"
    with pytest.raises(InputError, match="same folder"):
        segment.plan_outputs(tmp_path / "in", tmp_path / "in")
    with pytest.raises(InputError, match="same file"):
        segment.plan_outputs(tmp_path / "in" / "a.nii", tmp_path / "in" / "a.nii")
    with pytest.raises(InputError, match="no such"):
        segment.plan_outputs(tmp_path / "missing.nii.gz", tmp_path / "o.nii.gz")
    with pytest.raises(InputError, match=".nii"):
        segment.plan_outputs(tmp_path / "in" / "notes.txt", tmp_path / "o.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .nii"):
        segment.plan_outputs(tmp_path / "empty", tmp_path / "out")


def test_predict_and_export_scripts(tmp_path):
    data_dir = ed.write_preprocessed(tmp_path / "data", ("001",))
    wd = ed.write_workdir(tmp_path / "wd", ed.random_unet(5), data_dir)
    (tmp_path / "scans").mkdir()
    for k in range(2):
        ed.write_raw(tmp_path / "scans" / f"s{k}.nii.gz", seed=k, shape=(40 + 6 * k, 48, 2))
    from absl import flags

    from evaluation import export

    fv = flags.FlagValues()  # the `python -m evaluation.export` CLI, parsed in-process
    export.define_flags(fv)
    fv(["export", f"--model={wd}", f"--export_dir={tmp_path / 'exp'}", "--precision=mixed_bfloat16"])
    export.export_model(fv.model, fv.export_dir, fv.dataset, fv.precision)
    meta = json.loads((tmp_path / "exp" / "1" / export.METADATA_PATH).read_text())
    assert meta["dataset"] == "synthetic" and meta["n4"] is False and meta["precision"] == "mixed_bfloat16"
    with pytest.raises(InputError, match="already a SavedModel"):
        fv2 = flags.FlagValues()
        export.define_flags(fv2)
        fv2(["export", f"--model={tmp_path / 'exp'}", f"--export_dir={tmp_path / 'exp2'}"])
        export.export_model(fv2.model, fv2.export_dir, fv2.dataset)
    proc = subprocess.run([sys.executable, "predict.py", f"--model={tmp_path / 'exp'}",
                           f"--input={tmp_path / 'scans'}", f"--output={tmp_path / 'segs'}"],
                          cwd=REPO, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "s1.nii.gz ->" in proc.stdout
    assert (tmp_path / "exp" / "1" / "saved_model.pb").is_file()
    for k in range(2):
        seg = nib.load(str(tmp_path / "segs" / f"s{k}.nii.gz"))
        src = nib.load(str(tmp_path / "scans" / f"s{k}.nii.gz"))
        assert seg.shape == src.shape and np.array_equal(seg.affine, src.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    bad = subprocess.run([sys.executable, "predict.py", f"--model={wd}", f"--input={tmp_path / 'nope.nii.gz'}",
                          f"--output={tmp_path / 'o.nii.gz'}"], cwd=REPO, capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --input=")


def test_segment_runs_n4_with_the_shrink_factor_of_preprocessing():
    """predict.py's N4 must be the training data's: the same shrink factor of the N4 fit as
    ``python -m data.preprocess --n4 --n4_shrink 2`` recorded, so the network sees the same input."""
    from data.volume_prep import preprocess_volume

    image, _, affine = ed.raw_volume(0, shape=(45, 52, 3))
    x = np.linspace(-1.0, 1.0, image.shape[0])[:, None, None]
    image = (image * 800.0 + 50.0) * np.exp(0.4 * x)  # (H0, W0, D) with a smooth bias field
    spacing = tuple(float(abs(affine[i, i])) for i in range(3))
    shrink2 = preprocess_volume(image, spacing, CFG, n4=True, n4_shrink=2)[0]  # (D, H, W) as training saw it
    shrink1 = preprocess_volume(image, spacing, CFG, n4=True, n4_shrink=1)[0]
    assert np.abs(shrink2 - shrink1).max() > 1e-3  # the factor changes the network input

    seen = []

    def recording(x):  # (N, H, W, 1) -> uniform probabilities
        seen.append(x[..., 0].copy())
        return np.full(x.shape[:3] + (4,), 0.25, np.float32)

    segment.segment_volume(recording, CFG, image, spacing, n4=True, n4_shrink=2)
    np.testing.assert_allclose(np.concatenate(seen), shrink2, atol=1e-6)
