"""data.preprocess (ORIGINAL_SPEC §5.1-5.2) and data.store on hand-computed cases and tiny datasets."""
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import skimage.transform

from _data_helpers import blob_volume, oblique_affine, write_acdc, write_mmwhs_raw, write_prostate_msd
from configs.base import DatasetConfig
from data import geometry, preprocess, store, volume_prep
from common.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(size, res, c=4):
    return DatasetConfig(name="t", image_size=size, target_resolution=res, num_classes=c,
                         struct_names=tuple("abcdefg"[: c - 1]), class_weights=(0.1,) * c, min_seg_classes=2,
                         crf_params=(0.01, 0.5, 10, 10, 30, 30), unlabeled_pool=("trall", "c1"))


def test_normalization_by_hand():
    x = np.arange(101, dtype=np.float32).reshape(101, 1, 1)  # percentiles 1 and 99 are 1 and 99
    out, p1, p99 = volume_prep.normalize_minmax(x)
    assert (p1, p99) == (1.0, 99.0)
    np.testing.assert_allclose(out[:, 0, 0], (np.arange(101) - 1) / 98, rtol=1e-6)
    assert out.min() < 0 and out.max() > 1  # no clipping
    with pytest.raises(InputError, match="constant"):
        volume_prep.normalize_minmax(np.ones((4, 4, 2)))


def test_two_times_downscale_by_hand():
    img = np.tile(np.arange(8, dtype=np.float32)[:, None, None], (1, 8, 1)) + 100.0  # (8, 8, 1)
    lab = np.zeros((8, 8, 1), np.int16)
    lab[4:, 2:4] = 2  # aligned with 2x2 blocks -> exact under nearest
    out, lab_p, meta = volume_prep.preprocess_volume(img, (1.0, 1.0, 5.0), _cfg((4, 4), (2.0, 2.0)), lab)
    assert meta["scale"] == [0.5, 0.5] and meta["rescaled_shape"] == [4, 4]
    # normalized ramp n(v) = (v - p1)/(p99 - p1); output pixel i samples 2i + 0.5 (mean of 2i, 2i+1)
    p1, p99 = np.percentile(img, [1, 99])
    expected = (np.array([0.5, 2.5, 4.5, 6.5]) + 100.0 - p1) / (p99 - p1)
    assert out.shape == (1, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out[0, :, 3], expected, rtol=1e-5)
    exp_lab = np.zeros((4, 4), np.int16)
    exp_lab[2:, 1] = 2
    np.testing.assert_array_equal(lab_p[0], exp_lab)
    assert lab_p.dtype == np.int16


def test_matches_per_slice_skimage_rescale_then_crop_pad():
    img, lab = blob_volume((37, 29, 3))
    spacing, cfg = (1.37, 0.9, 6.0), _cfg((20, 20), (1.6, 1.6))
    out, lab_p, meta = volume_prep.preprocess_volume(img, spacing, cfg, lab)
    norm, _, _ = volume_prep.normalize_minmax(img)
    for k in range(3):
        ref = skimage.transform.rescale(norm[:, :, k].astype(np.float64), (1.37 / 1.6, 0.9 / 1.6), order=1,
                                        preserve_range=True, mode="constant", anti_aliasing=False)
        ref_l = skimage.transform.rescale(lab[:, :, k].astype(np.float64), (1.37 / 1.6, 0.9 / 1.6), order=0,
                                          preserve_range=True, mode="constant", anti_aliasing=False)
        assert list(ref.shape) == meta["rescaled_shape"]  # (32, 16): crop x, pad y
        np.testing.assert_allclose(out[k], geometry.crop_or_pad(ref, (20, 20)), atol=1e-6)
        np.testing.assert_array_equal(lab_p[k], geometry.crop_or_pad(ref_l, (20, 20)).astype(np.int16))
    assert meta["crop_pad"] == [{"mode": "crop", "start": 6}, {"mode": "pad", "offset": 2}]


def test_preprocessed_affine_maps_to_same_world_points():
    aff = oblique_affine((2.0, 2.0, 7.0))
    img, _ = blob_volume((30, 26, 2))
    _, _, meta = volume_prep.preprocess_volume(img, (2.0, 2.0, 7.0), _cfg((24, 32), (2.0, 2.0)), None)
    new = volume_prep.preprocessed_affine(aff, meta)
    # x cropped by 3, y padded by 3: preprocessed (i, j) is native (i + 3, j - 3)
    for i, j in ((0, 3), (10, 20), (23, 28)):
        np.testing.assert_allclose(new @ [i, j, 1, 1], aff @ [i + 3, j - 3, 1, 1], atol=1e-9)
    _, _, meta2 = volume_prep.preprocess_volume(img, (1.0, 1.0, 7.0), _cfg((15, 13), (2.0, 2.0)), None)
    new2 = volume_prep.preprocessed_affine(aff, meta2)  # 2x downscale: pixel i centre at native 2i + 0.5
    np.testing.assert_allclose(new2 @ [4, 5, 0, 1], aff @ [8.5, 10.5, 0, 1], atol=1e-9)


def test_n4_reduces_bias_and_shrink_option():
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    obj = (np.hypot(x, y) < 0.8).astype(np.float64)
    truth = np.repeat((100.0 * obj + 20.0)[:, :, None], 3, axis=2)
    biased = truth * np.exp(0.5 * x)[:, :, None] + rng.normal(0, 0.5, truth.shape)
    inside = np.repeat(obj[:, :, None] > 0, 3, axis=2)
    cv = lambda a: a[inside].std() / a[inside].mean()  # noqa: E731
    for shrink in (1, 2):
        out = volume_prep.n4_correct(biased.astype(np.float32), (1.5, 1.5, 8.0), shrink_factor=shrink)
        assert out.shape == biased.shape and out.dtype == np.float32
        assert cv(out) < 0.6 * cv(biased)


def test_preprocess_acdc_dataset_layout_and_store(tmp_path):
    raw = write_acdc(tmp_path / "raw", patients=(1, 2))
    out = tmp_path / "pp"
    s = preprocess.preprocess_dataset("acdc", raw, out, phases=("ED", "ES"))
    assert s["ids"] == ["001", "001_ES", "002", "002_ES"] and s["labeled_ids"] == s["ids"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["dataset"] == "acdc" and info["image_size"] == [192, 192] and info["n4"] is False
    assert sorted(p.name for p in (out / "002").iterdir()) == ["image.nii.gz", "label.nii.gz", "meta.json",
                                                                "native_label.nii.gz"]
    img = nib.load(str(out / "002" / "image.nii.gz"))
    assert img.get_data_dtype() == np.float32 and img.shape == (192, 192, 3)
    assert nib.load(str(out / "002" / "label.nii.gz")).get_data_dtype() == np.int16
    native = store.load_native_label(out, "002")
    src = nib.load(str(raw / "training" / "patient002" / "patient002_frame04_gt.nii.gz"))
    np.testing.assert_allclose(native.affine, src.affine)
    np.testing.assert_array_equal(np.asanyarray(native.dataobj), np.asanyarray(src.dataobj))
    assert native.header.get_zooms() == src.header.get_zooms()
    assert store.list_ids(out) == s["ids"]
    vols = store.load_volumes(out, ["002", "001_ES"])
    assert vols[0].image.shape == (3, 192, 192) and vols[0].image.dtype == np.float32
    assert vols[0].label.dtype == np.int16 and set(np.unique(vols[0].label)) == {0, 1, 2, 3}
    meta = vols[0].meta
    assert meta["native_shape"] == [24, 20, 3] and meta["info"]["frame"] == 4 and meta["id"] == "002"
    np.testing.assert_allclose(meta["scale"], [1.5 / 1.36719, 1.25 / 1.36719])
    np.testing.assert_allclose(meta["affine"], oblique_affine())
    # the stored label maps back onto the native label
    back = geometry.labels_to_native(np.eye(4, dtype=np.float32)[vols[0].label], meta)
    agree = np.mean(back == np.asanyarray(native.dataobj))
    assert agree > 0.95
    # rerun replaces the directory (ids subset), no leftovers
    s2 = preprocess.preprocess_dataset("acdc", raw, out, ids=["002"])
    assert s2["ids"] == ["002"] and sorted(p.name for p in out.iterdir()) == ["002", "dataset.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_preprocess_prostate_and_mmwhs(tmp_path):
    s = preprocess.preprocess_dataset("prostate_md", write_prostate_msd(tmp_path / "p"), tmp_path / "pp")
    assert s["ids"] == ["000", "001"]
    v = store.load_volume(tmp_path / "pp", "001")
    assert v.image.shape == (3, 192, 192) and set(np.unique(v.label)) == {0, 1, 2}
    s = preprocess.preprocess_dataset("mmwhs", write_mmwhs_raw(tmp_path / "m"), tmp_path / "mp")
    v = store.load_volume(tmp_path / "mp", "1002")
    assert v.image.shape == (3, 160, 160) and v.label.max() == 7
    assert np.asanyarray(store.load_native_label(tmp_path / "mp", "1002").dataobj).max() == 7


def test_cli_runs_and_prints_summary(tmp_path):
    raw = write_acdc(tmp_path / "raw", patients=(3,))
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "acdc", "--raw_dir", str(raw),
                        "--out_dir", str(tmp_path / "pp"), "--n4", "--n4_shrink", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "preprocessed 1 volumes (1 labeled" in r.stdout and "n4=True" in r.stdout
    assert json.loads((tmp_path / "pp" / "dataset.json").read_text())["n4_shrink"] == 2
