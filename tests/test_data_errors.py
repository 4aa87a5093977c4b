"""Bad input -> one-line InputError naming the file and the problem; CLIs exit 2, write nothing."""
import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _data_helpers import blob_volume, save, write_acdc, write_mmwhs_raw, write_prostate_msd
from data import preprocess, readers, store, synthetic, volume_prep
from common.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P1 = "training/patient001"


@pytest.fixture
def acdc(tmp_path):
    return write_acdc(tmp_path / "raw", patients=(1, 2))


def _expect(raw, match, dataset="acdc", **kw):
    """preprocess_dataset must raise a one-line InputError and leave no output behind."""
    out = raw.parent / "pp"
    with pytest.raises(InputError, match=match) as exc:
        preprocess.preprocess_dataset(dataset, raw, out, **kw)
    assert "\n" not in str(exc.value)
    assert not out.exists() and not [p for p in raw.parent.iterdir() if p.name.startswith(".")]
    return str(exc.value)


def test_missing_image_file(acdc):
    (acdc / P1 / "patient001_frame01.nii.gz").unlink()
    msg = _expect(acdc, "image file not found")
    assert "patient001_frame01.nii.gz" in msg


def test_missing_label_file(tmp_path):
    raw = write_prostate_msd(tmp_path / "raw")
    (raw / "labelsTr" / "prostate_01.nii.gz").unlink()
    _expect(raw, r"labelsTr/prostate_01.nii.gz: label file not found", dataset="prostate_md")


def test_truncated_nifti(acdc):
    path = acdc / P1 / "patient001_frame01_gt.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header cut
    _expect(acdc, r"patient001_frame01_gt.nii.gz: cannot read label as NIfTI")
    noise = np.random.default_rng(0).normal(size=(24, 20, 3)).astype(np.float32)  # incompressible
    img = save(noise, acdc / P1 / "patient001_frame01.nii.gz")
    data = img.read_bytes()
    img.write_bytes(data[: int(len(data) * 0.7)])  # header intact, voxel data cut
    _expect(acdc, r"patient001_frame01.nii.gz: cannot read image as NIfTI \(truncated or corrupt\?\)")


def test_unreadable_nifti(acdc):
    (acdc / P1 / "patient001_frame01.nii.gz").write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    _expect(acdc, r"patient001_frame01.nii.gz: cannot read image as NIfTI")


def test_shape_mismatch(acdc):
    img, _ = blob_volume((24, 18, 3))
    save(img.astype(np.int16), acdc / P1 / "patient001_frame01.nii.gz")
    _expect(acdc, r"patient001_frame01_gt.nii.gz: label shape \(24, 20, 3\) differs from image shape \(24, 18, 3\)")


def test_label_values_out_of_range(acdc):
    _, lab = blob_volume((24, 20, 3))
    lab[0, 0, 0] = 5
    save(lab, acdc / P1 / "patient001_frame01_gt.nii.gz", dtype=np.uint8)
    _expect(acdc, r"patient001_frame01_gt.nii.gz: label values 5 outside 0..3")


def test_non_integer_labels(acdc):
    _, lab = blob_volume((24, 20, 3))
    save(lab.astype(np.float32) + 0.5, acdc / P1 / "patient001_frame01_gt.nii.gz")
    _expect(acdc, "non-integer")


def test_unknown_mmwhs_label_value(tmp_path):
    raw = write_mmwhs_raw(tmp_path / "raw", ids=(1001,))
    lab = np.zeros((24, 20, 3), np.int16)
    lab[0, 0, 0] = 421
    save(lab, raw / "mr_train" / "mr_train_1001_label.nii.gz", dtype=np.int16)
    _expect(raw, "label values 421 are not MM-WHS labels", dataset="mmwhs")


def test_nan_and_inf_voxels(acdc):
    img, _ = blob_volume((24, 20, 3))
    img[1, 2, 0], img[3, 3, 1] = np.nan, np.inf
    save(img, acdc / P1 / "patient001_frame01.nii.gz")
    _expect(acdc, r"patient001_frame01.nii.gz: image contains 2 NaN/Inf voxels")
    with pytest.raises(InputError, match="NaN"):
        import configs
        volume_prep.preprocess_volume(img, (1.0, 1.0, 1.0), configs.get_config("synthetic"))


def test_wrong_number_of_dimensions(acdc, tmp_path):
    img, _ = blob_volume((24, 20, 3))
    save(img[:, :, 0], acdc / P1 / "patient001_frame01.nii.gz")
    _expect(acdc, r"image has 2 dimensions \(24, 20\), expected 3")
    raw = write_prostate_msd(tmp_path / "p")
    save(np.zeros((4, 4, 2, 2, 2), np.float32), raw / "imagesTr" / "prostate_00.nii.gz")
    _expect(raw, "image has 5 dimensions .* expected 3 or 4", dataset="prostate_md")


def test_info_cfg_problems(acdc):
    cfg = acdc / P1 / "Info.cfg"
    cfg.write_text("ED: 1\nGroup: NOR\n")
    msg = _expect(acdc, r"Info.cfg: missing field\(s\) ES")
    assert "patient001" in msg
    cfg.write_text("ED: 1\nES: twelve\n")
    _expect(acdc, "field ES is not a frame number")
    cfg.write_text("ED 1\nES: 3\n")
    _expect(acdc, "line 1 is not 'key: value'")
    cfg.unlink()
    _expect(acdc, "Info.cfg not found")


def test_bad_n4_shrink_is_refused_before_reading(acdc):
    msg = _expect(acdc, r"^--n4_shrink=0: must be >= 1$", n4=True, n4_shrink=0)
    assert "patient" not in msg


def test_unknown_ids(acdc, tmp_path):
    _expect(acdc, r"--ids: unknown volume id\(s\) 007", ids=["001", "007"])
    out = tmp_path / "pp_ok"
    preprocess.preprocess_dataset("acdc", acdc, out)
    with pytest.raises(InputError, match=r"unknown volume id\(s\) 001_ES"):
        store.load_volumes(out, ["001", "001_ES"])
    with pytest.raises(InputError, match="unknown volume id '042'"):
        store.load_volume(out, "042")
    with pytest.raises(InputError, match="dataset.json: not found"):
        store.list_ids(acdc)


def test_malformed_dataset_json(tmp_path):
    path = tmp_path / "dataset.json"
    for text, msg in (("[1, 2]", "expected a JSON object"), ('{"dataset": "acdc"}', "no 'ids' list"),
                      ('{"ids": "001"}', "no 'ids' list"), ("{", "invalid JSON")):
        path.write_text(text)
        with pytest.raises(InputError, match=msg):
            store.list_ids(tmp_path)


def test_out_dir_inside_raw_dir(acdc, tmp_path):
    with pytest.raises(InputError, match="is inside --raw_dir"):
        preprocess.preprocess_dataset("acdc", acdc, acdc / "pp")
    with pytest.raises(InputError, match="is inside --raw_dir"):
        preprocess.preprocess_dataset("acdc", acdc, acdc)
    with pytest.raises(InputError, match="contains --raw_dir"):
        preprocess.preprocess_dataset("acdc", acdc, tmp_path)
    assert not (acdc / "pp").exists()


def test_refuses_to_replace_foreign_directories(acdc, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a preprocessed data dir"):
        preprocess.preprocess_dataset("acdc", acdc, foreign)
    with pytest.raises(InputError, match="not written by data.synthetic"):
        synthetic.generate(foreign, 1)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_failed_rerun_keeps_previous_output(acdc):
    out = acdc.parent / "pp"
    preprocess.preprocess_dataset("acdc", acdc, out)
    before = sorted(p.name for p in out.rglob("*"))
    (acdc / "training" / "patient002" / "patient002_frame04_gt.nii.gz").write_bytes(b"garbage")
    with pytest.raises(InputError):
        preprocess.preprocess_dataset("acdc", acdc, out)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert not [p for p in acdc.parent.iterdir() if p.name.startswith(".")]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_exit_2_without_traceback(acdc, tmp_path):
    shutil.copy(acdc / P1 / "patient001_frame01.nii.gz", acdc / P1 / "patient001_frame01_gt.nii.gz")  # bad labels
    r = _cli("data.preprocess", "--dataset", "acdc", "--raw_dir", str(acdc), "--out_dir", str(tmp_path / "pp"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "patient001_frame01_gt.nii.gz" in lines[0]
    assert not (tmp_path / "pp").exists()
    r = _cli("data.synthetic", "--out_dir", str(tmp_path / "s"), "--num_patients", "0")
    assert r.returncode == 2 and r.stderr.strip() == "error: --num_patients=0: must be between 1 and 999"
    r = _cli("data.render", "--data_dir", str(tmp_path / "nothing"), "--out_dir", str(tmp_path / "png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--data_dir" in r.stderr


def test_phases_only_for_acdc_layout(tmp_path):
    raw = write_prostate_msd(tmp_path / "raw")
    _expect(raw, "phases apply to ACDC-layout datasets only", dataset="prostate_md", phases=("ED", "ES"))


def test_find_volumes_bad_layout(tmp_path):
    with pytest.raises(InputError, match="layout 'brats'"):
        readers.find_volumes("brats", tmp_path)
