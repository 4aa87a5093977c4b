"""--layout original_cropped: the originals' img_cropped / mask_cropped files, read without resampling."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _layout_helpers import expect_layout_error, cropped_affine, heart, save_cropped, write_cropped
from data import cropped, geometry, preprocess, store
from common.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_identity_geometry_values_unchanged(tmp_path):
    raw = write_cropped(tmp_path / "crop", folders=("patient001", "patient007"))
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pp", layout="original_cropped")
    assert s["ids"] == ["001", "007"] and s["labeled_ids"] == ["001", "007"] and s["layout"] == "original_cropped"
    assert "cropped grid (2.5 x 2.5 mm" in s["evaluation_grid"] and s["n4"] is None
    src_img = nib.load(str(raw / "patient007" / "img_cropped.nii.gz"))
    src_lab = nib.load(str(raw / "patient007" / "mask_cropped.nii.gz"))
    vol = store.load_volume(tmp_path / "pp", "007")
    # values as stored: no renormalization, no resampling; (H, W, D) -> (D, H, W)
    np.testing.assert_array_equal(vol.image, np.transpose(np.asanyarray(src_img.dataobj), (2, 0, 1)))
    np.testing.assert_array_equal(vol.label, np.transpose(np.asanyarray(src_lab.dataobj), (2, 0, 1)))
    meta = vol.meta
    assert meta["scale"] == [1.0, 1.0] and meta["rescaled_shape"] == [64, 64] and meta["native_shape"] == [64, 64, 3]
    assert meta["crop_pad"] == [{"mode": "none"}, {"mode": "none"}]
    # the grid of evaluation is the cropped grid: native label = the mask, with its affine
    native = store.load_native_label(tmp_path / "pp", "007")
    np.testing.assert_array_equal(np.asanyarray(native.dataobj), np.asanyarray(src_lab.dataobj))
    np.testing.assert_allclose(native.affine, src_lab.affine)
    np.testing.assert_allclose(nib.load(str(tmp_path / "pp" / "007" / "image.nii.gz")).affine, src_img.affine)
    back = geometry.labels_to_native(np.eye(4, dtype=np.float32)[vol.label], meta)  # one-hot -> native grid
    np.testing.assert_array_equal(back, np.asanyarray(src_lab.dataobj))


def test_unset_slice_spacing_is_unknown_and_said(tmp_path):
    raw = write_cropped(tmp_path / "crop", folders=("patient001",), slice_spacing=1.0)
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pp", layout="original_cropped")
    meta = store.load_meta(tmp_path / "pp", "001")
    assert meta["spacing"] == [2.5, 2.5, None] and meta["spacing_source"] == "header (slice spacing unknown)"
    assert s["surface_distance_units"].startswith("pixels")
    assert any("pixels only" in w and "--pixel_spacing" in w for w in s["warnings"])
    info = json.loads((tmp_path / "pp" / "dataset.json").read_text())
    assert info["surface_distance_units"] == s["surface_distance_units"]


def test_real_slice_spacing_and_pixel_spacing_flag(tmp_path):
    raw = write_cropped(tmp_path / "crop", folders=("patient001",), slice_spacing=10.0)
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "a", layout="original_cropped")
    assert store.load_meta(tmp_path / "a", "001")["spacing"] == [2.5, 2.5, 10.0]
    assert s["surface_distance_units"] == "mm" and s["warnings"] == []
    raw1 = write_cropped(tmp_path / "crop1", folders=("patient001",), slice_spacing=1.0)
    s = preprocess.preprocess_dataset("synthetic", raw1, tmp_path / "b", layout="original_cropped",
                                      pixel_spacing=(2.5, 2.5, 8.0))
    meta = store.load_meta(tmp_path / "b", "001")
    assert meta["spacing"] == [2.5, 2.5, 8.0] and meta["spacing_source"] == "--pixel_spacing"
    native = store.load_native_label(tmp_path / "b", "001")
    np.testing.assert_allclose(native.header.get_zooms(), (2.5, 2.5, 8.0))
    np.testing.assert_allclose(np.diag(native.affine)[:3], (-2.5, -2.5, 8.0))  # directions kept
    with pytest.raises(InputError, match=r"--pixel_spacing in-plane 1.5 x 1.5 mm differs from the synthetic target"):
        preprocess.preprocess_dataset("synthetic", raw1, tmp_path / "c", layout="original_cropped",
                                      pixel_spacing=(1.5, 1.5, 8.0))


def test_folders_with_other_names_are_said(tmp_path):
    """Issue 20: folders that are not patientXXX/ or XXX/ are skipped with one warning naming them."""
    raw = write_cropped(tmp_path / "crop", folders=("patient001",), slice_spacing=10.0)
    for name in ("patient_002", "scans"):
        (raw / name).mkdir()
    (raw / "README.txt").write_text("not a folder")
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pp", layout="original_cropped")
    assert s["ids"] == ["001"]
    assert s["warnings"] == [f"--raw_dir={raw}: 2 folder(s) not named patientXXX/ or XXX/ ignored: patient_002, scans"]


def test_prostate_folder_names_and_positive_affine(tmp_path):
    raw = tmp_path / "pros"
    lab = np.minimum(heart((64, 64, 2)), 2)
    for name in ("000", "patient012"):
        save_cropped(raw / name / "img_cropped.nii.gz", (lab / 2.0).astype(np.float32), np.diag([0.625, 0.625, 3.6, 1]))
        save_cropped(raw / name / "mask_cropped.nii.gz", lab, np.diag([0.625, 0.625, 3.6, 1]))
    srcs = cropped.find_cropped(raw, "prostate_md")
    assert [s.id for s in srcs] == ["000", "012"]
    from configs import get_config

    cfg = get_config("prostate_md")
    with pytest.raises(InputError, match=r"in-plane size 64x64 is not the prostate_md network size 192x192"):
        cropped.read_cropped(srcs[0], cfg)


def _expect(raw, match, dataset="synthetic", **kw):
    return expect_layout_error(raw, "original_cropped", match, dataset, **kw)


def test_bad_input_one_line_errors(tmp_path):
    raw = write_cropped(tmp_path / "crop")
    (raw / "patient002" / "mask_cropped.nii.gz").unlink()
    _expect(raw, r"patient002/mask_cropped.nii.gz: mask file not found")
    save_cropped(raw / "patient002" / "mask_cropped.nii.gz", heart((64, 60, 3)), cropped_affine(2.5))
    _expect(raw, r"mask_cropped.nii.gz: label shape \(64, 60, 3\) differs from image shape \(64, 64, 3\)")
    save_cropped(raw / "patient002" / "mask_cropped.nii.gz", (heart((64, 64, 3)) + 2).astype(np.int16),
                 cropped_affine(2.5))
    _expect(raw, r"mask_cropped.nii.gz: label values 4, 5 outside 0..3")
    write_cropped(raw, folders=("patient002",))
    save_cropped(raw / "patient002" / "img_cropped.nii.gz", np.zeros((64, 64, 3), np.float32), cropped_affine(1.9))
    _expect(raw, r"img_cropped.nii.gz: in-plane spacing 1.9 x 1.9 mm differs from the synthetic target resolution 2.5 mm")
    write_cropped(raw, folders=("patient002",), size=(48, 64))
    _expect(raw, r"in-plane size 48x64 is not the synthetic network size 64x64")


def test_layout_flag_errors(tmp_path):
    raw = write_cropped(tmp_path / "crop", folders=("patient001",))
    _expect(raw, "no originals' cropped layout|cropped files only for ACDC-layout and prostate_md", dataset="mmwhs")
    _expect(raw, r"--phases=ED,ES: the original_cropped layout holds the ED frame only", phases=("ED", "ES"))
    _expect(raw, r"--n4: the original_cropped files are already intensity-preprocessed", n4=True)
    (raw / "001").mkdir()
    _expect(raw, r"folders 001 and patient001 both give volume id 001")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect(empty, r"no patientXXX/ or XXX/ folders with img_cropped.nii.gz found")


def test_cli(tmp_path):
    raw = write_cropped(tmp_path / "crop", folders=("patient001",))
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "synthetic", "--layout",
                        "original_cropped", "--raw_dir", str(raw), "--out_dir", str(tmp_path / "pp")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "layout original_cropped" in r.stdout and "HD95/ASSD units: pixels" in r.stdout
    assert "warning: HD95/ASSD will be reported in pixels only" in r.stderr
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "synthetic", "--layout",
                        "original_cropped", "--raw_dir", str(raw), "--out_dir", str(tmp_path / "pq"),
                        "--pixel_spacing", "2.5,2.5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --pixel_spacing=2.5,2.5: expected 1 value (in-plane mm) or 3 values X,Y,Z, got 2"]
