"""--layout ssl4mis_h5: SSL4MIS ACDC h5 volumes and slices, the lists, ED/ES ids, unknown spacing."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _layout_helpers import expect_layout_error, h5_volume, save_h5, write_ssl4mis
from data import geometry, preprocess, ssl4mis, store
from common.errors import InputError
from data.spacing import affine_with_spacing, describe, is_complete, parse_pixel_spacing

ROOT = Path(__file__).resolve().parents[1]


def _h5(path):
    import h5py

    with h5py.File(path, "r") as f:
        return f["image"][()], f["label"][()]


def test_find_ids_lower_frame_is_ed_volumes_and_slices(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11), 3: (1, 2)}, as_slices=(2,))
    srcs = ssl4mis.find_h5(raw)
    assert [(s.id, s.name) for s in srcs] == [
        ("001", "patient001_frame01"), ("001_ES", "patient001_frame12"), ("002", "patient002_frame04"),
        ("002_ES", "patient002_frame11"), ("003", "patient003_frame01"), ("003_ES", "patient003_frame02")]
    two = [s for s in srcs if s.id == "002"][0]
    assert two.volume_path is None and [p.name for p in two.slice_paths] == [
        "patient002_frame04_slice_1.h5", "patient002_frame04_slice_2.h5", "patient002_frame04_slice_3.h5"]
    assert two.where.endswith("patient002_frame04_slice_{1..3}.h5")
    assert [s.id for s in ssl4mis.find_h5(raw, phases=("ES",))] == ["001_ES", "002_ES", "003_ES"]


def test_read_transposes_to_nifti_order_and_stacks_slices(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11)}, as_slices=(2,),
                        shapes={2: (4, 30, 26)}, slices_dir="slices", first_slice=0)
    srcs = {s.id: s for s in ssl4mis.find_h5(raw)}
    vol = ssl4mis.read_h5(srcs["001"], 4)
    image, label = _h5(raw / "data" / "patient001_frame01.h5")  # (Z, H, W)
    np.testing.assert_array_equal(vol.label, np.transpose(label, (2, 1, 0)))
    np.testing.assert_allclose(vol.image, np.transpose(image, (2, 1, 0)))
    assert vol.spacing == (None, None, None) and vol.spacing_source == "unknown"
    stacked = ssl4mis.read_h5(srcs["002_ES"], 4)
    want = np.stack([_h5(raw / "data" / "slices" / f"patient002_frame11_slice_{z}.h5")[1] for z in range(4)])
    assert stacked.label.shape == (26, 30, 4)
    np.testing.assert_array_equal(stacked.label, np.transpose(want, (2, 1, 0)))
    # ES was written smaller than ED: the lower frame number really is the ED volume
    assert (stacked.label == 3).sum() < (ssl4mis.read_h5(srcs["002"], 4).label == 3).sum()


def test_preprocess_h5_resizes_to_network_size_and_maps_back(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11)}, as_slices=(2,),
                        shapes={1: (3, 48, 40), 2: (2, 56, 64)}, lists={"train": [2], "val": [], "test": [1]})
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pp", layout="ssl4mis_h5")
    assert s["ids"] == ["001", "001_ES", "002", "002_ES"] and s["phases"] == ["ED", "ES"]
    assert s["target_resolution"] is None and "SSL4MIS h5 grid" in s["evaluation_grid"]
    assert s["surface_distance_units"].startswith("pixels") and any("pixels only" in w for w in s["warnings"])
    assert s["ssl4mis_lists"]["train"] == 2 and s["ssl4mis_lists"]["test_patients"] == ["001"]
    vol = store.load_volume(tmp_path / "pp", "002")
    assert vol.image.shape == (2, 64, 64) and set(np.unique(vol.label)) == {0, 1, 2, 3}
    meta = vol.meta
    assert meta["native_shape"] == [64, 56, 2] and meta["rescaled_shape"] == [64, 64]
    assert meta["scale"] == pytest.approx([1.0, 64 / 56]) and meta["spacing"] == [None, None, None]
    assert meta["info"]["from"] == "slices" and meta["info"]["phase"] == "ED"
    native = np.asanyarray(store.load_native_label(tmp_path / "pp", "002").dataobj)
    want = np.stack([_h5(raw / "data" / f"patient002_frame04_slice_{k}.h5")[1] for k in (1, 2)])  # (Z, H, W)
    np.testing.assert_array_equal(native, np.transpose(want, (2, 1, 0)))
    back = geometry.labels_to_native(np.eye(4, dtype=np.float32)[vol.label], meta)
    assert np.mean(back == native) > 0.97
    hdr = nib.load(str(tmp_path / "pp" / "002" / "native_label.nii.gz")).header
    assert hdr.get_xyzt_units()[0] == "unknown" and b"spacing unknown" in hdr["descrip"].tobytes()


def test_pixel_spacing_gives_mm(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12)})
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pp", layout="ssl4mis_h5",
                                      pixel_spacing=(1.5, 1.25, 10.0))
    assert s["surface_distance_units"] == "mm" and not any("pixels" in w for w in s["warnings"])
    native = store.load_native_label(tmp_path / "pp", "001_ES")
    np.testing.assert_allclose(native.header.get_zooms(), (1.5, 1.25, 10.0))
    assert store.load_meta(tmp_path / "pp", "001_ES")["spacing_source"] == "--pixel_spacing"
    s = preprocess.preprocess_dataset("synthetic", raw, tmp_path / "pq", layout="ssl4mis_h5",
                                      pixel_spacing=parse_pixel_spacing("1.5"))
    assert store.load_meta(tmp_path / "pq", "001")["spacing"] == [1.5, 1.5, None]
    assert s["surface_distance_units"].startswith("pixels")


def test_parse_pixel_spacing_and_helpers():
    assert parse_pixel_spacing(None) is None and parse_pixel_spacing(" ") is None
    assert parse_pixel_spacing("1.5") == (1.5, 1.5, None)
    assert parse_pixel_spacing("1.5, 1.25,10") == (1.5, 1.25, 10.0)
    for bad, msg in (("a", "numbers"), ("1,2", "got 2"), ("1,2,3,4", "got 4"), ("0", "positive"), ("1,nan,2", "positive")):
        with pytest.raises(InputError, match=msg):
            parse_pixel_spacing(bad)
    assert is_complete((1.0, 1.0, 2.0)) and not is_complete((1.0, 1.0, None)) and not is_complete(None)
    assert describe((1.5, 1.5, None)) == "1.5 x 1.5 x ? mm"
    aff = np.array([[0.0, -2.0, 0.0, 5.0], [2.0, 0.0, 0.0, 6.0], [0.0, 0.0, 1.0, 7.0], [0, 0, 0, 1]])
    out = affine_with_spacing(aff, (1.0, 3.0, None))
    np.testing.assert_allclose(out, [[0, -3, 0, 5], [1, 0, 0, 6], [0, 0, 1, 7], [0, 0, 0, 1]])


def test_lists_match_configs_and_labeled_from_train_slices():
    from configs import acdc

    def names(patients):
        return [f"patient{int(p):03d}_frame{f:02d}" for p in patients for f in (1, 2)]

    train = list(acdc.SSL4MIS_LABELED7) + [p for p in acdc.SSL4MIS_TRAIN_PATIENTS if p not in acdc.SSL4MIS_LABELED7]
    slices = [f"{n}_slice_{k}" for n in names(train) for k in range(1, 11)]  # 10 slices per frame
    lists = {"train": names(train), "val": names(acdc.SSL4MIS_VAL_PATIENTS), "test": names(acdc.SSL4MIS_TEST_PATIENTS),
             "train_slices": slices}
    found = ssl4mis.split_from_lists(lists)
    # 68 slices = 3 patients x 2 frames x 10 + 8 of the 4th patient: SSL4MIS's count, not a patient count
    assert found["labeled3"] == list(acdc.SSL4MIS_LABELED3) + [train[3]]
    assert found["val_patients"] == sorted(acdc.SSL4MIS_VAL_PATIENTS)
    diffs = ssl4mis.compare_with_config(found)
    assert diffs == ["labeled3: lists have 4 patients, configs 3; only in the lists: 100"]  # labeled7 (136) agrees
    real_counts = [16, 8, 10, 8, 9, 10, 7]  # slices per frame of 099, 038, 050, 100, 058, 021, 049 (the public lists)
    slices = [f"{n}_slice_{k}" for p, c in zip(acdc.SSL4MIS_LABELED7, real_counts) for n in names([p])
              for k in range(1, c + 1)]
    lists["train_slices"] = slices + [f"{n}_slice_1" for n in names(train[7:])]
    assert ssl4mis.compare_with_config(ssl4mis.split_from_lists(lists)) == []
    lists["val"] = names(acdc.SSL4MIS_VAL_PATIENTS[1:]) + names(["003"])
    diffs = ssl4mis.compare_with_config(ssl4mis.split_from_lists(lists))
    assert diffs == ["val_patients: lists have 10 patients, configs 10; only in the lists: 003; only in configs: 002"]


def test_acdc_lists_checked_against_configs(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 3: (1, 2)}, lists={"train": [3], "val": [], "test": [1]})
    s = preprocess.preprocess_dataset("acdc", raw, tmp_path / "pp", layout="ssl4mis_h5", ids=["001"])
    assert s["ids"] == ["001"] and store.load_volume(tmp_path / "pp", "001").image.shape == (3, 192, 192)
    assert s["ssl4mis_lists"]["matches_configs"] is False
    assert any(w.startswith("SSL4MIS lists differ from configs.acdc's ssl4mis split: train_patients") for w in s["warnings"])


def test_lists_that_cannot_be_compared_are_said(tmp_path):
    """Issue 20: a missing (or empty) list file and a train_slices.list too short for a labeled set
    are not compared with configs: one warning each, and matches_configs is not True."""
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12)}, lists={"test": [1]})
    s = preprocess.preprocess_dataset("acdc", raw, tmp_path / "pp", layout="ssl4mis_h5", ids=["001"])
    not_compared = [f"{raw / 'train.list'}: missing or empty; the train patients are not compared with configs.acdc's "
                    "ssl4mis split",
                    f"{raw / 'val.list'}: missing or empty; the val patients are not compared with configs.acdc's "
                    "ssl4mis split",
                    f"{raw / 'train_slices.list'}: 0 slices, fewer than the 68 of SSL4MIS's 3-patient labeled set; "
                    "labeled3 is not compared with configs.acdc",
                    f"{raw / 'train_slices.list'}: 0 slices, fewer than the 136 of SSL4MIS's 7-patient labeled set; "
                    "labeled7 is not compared with configs.acdc"]
    assert s["ssl4mis_lists"]["not_compared"] == not_compared
    assert set(not_compared) <= set(s["warnings"])
    assert s["ssl4mis_lists"]["matches_configs"] is False  # test.list (patient 1 only) differs


def _expect(raw, match, dataset="synthetic", **kw):
    return expect_layout_error(raw, "ssl4mis_h5", match, dataset, **kw)


def test_h5_content_errors(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12)})
    vol = raw / "data" / "patient001_frame12.h5"
    img, lab = h5_volume()
    save_h5(vol, img, lab, keys=("image",))
    _expect(raw, r"patient001_frame12.h5: no 'label' dataset \(found: image\)")
    save_h5(vol, img, lab, keys=())
    _expect(raw, r"no 'image' and no 'label' dataset \(found: nothing\)")
    vol.write_bytes(b"not an hdf5 file at all" * 10)
    _expect(raw, r"patient001_frame12.h5: cannot read as HDF5")
    save_h5(vol, img, lab[:, :, :30])
    _expect(raw, r"patient001_frame12.h5: label shape \(3, 40, 30\) differs from image shape \(3, 40, 36\)")
    save_h5(vol, img, np.where(lab == 3, 4, lab))
    _expect(raw, r"patient001_frame12.h5: label values 4 outside 0..3")
    save_h5(vol, img[0], lab[0])
    _expect(raw, r"patient001_frame12.h5: image has shape \(40, 36\), expected 3 non-empty dimensions")
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    save_h5(vol, bad, lab)
    _expect(raw, r"patient001_frame12.h5: image contains 1 NaN/Inf voxels")


def test_h5_float_labels_and_slices_errors(tmp_path):
    import h5py

    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11)}, as_slices=(2,))
    vol = raw / "data" / "patient001_frame01.h5"
    img, lab = h5_volume()
    with h5py.File(vol, "w") as f:
        f["image"], f["label"] = img, lab.astype(np.float32) + 0.5
    _expect(raw, r"patient001_frame01.h5: label has non-integer values")
    save_h5(vol, img, lab)
    (raw / "data" / "patient002_frame11_slice_2.h5").unlink()
    _expect(raw, r"slices of patient002_frame11 are not numbered consecutively from 0 or 1 \(missing slice_2\)")
    save_h5(raw / "data" / "patient002_frame11_slice_2.h5", img[0, :30], lab[0, :30])
    _expect(raw, r"patient002_frame11_slice_2.h5: slice shape \(30, 36\) differs from \(40, 36\)")
    save_h5(raw / "data" / "patient002_frame11_slice_2.h5", img[0], lab[0])
    save_h5(raw / "data" / "patient002_frame11.h5", img[:2], lab[:2])  # a volume beside 3 slice files
    _expect(raw, r"patient002_frame11.h5: 2 slices, but 3 patient002_frame11_slice_N.h5 files")


def test_layout_and_list_errors(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11)}, lists={"train": [2], "test": [1]})
    (raw / "data" / "patient002_frame11.h5").unlink()
    _expect(raw, r"patient002 has frame\(s\) 04; ED/ES need exactly two annotated frames per patient")
    raw = write_ssl4mis(tmp_path / "B", patients={1: (1, 12)}, lists={"train": [1]})
    (raw / "val.list").write_text("patient007_frame01\n")
    _expect(raw, r"val.list: names patient007_frame01 but neither data/patient007_frame01.h5 nor its slices exist")
    (raw / "val.list").write_text("patient001_frame01\npatient1 frame 2\n")
    _expect(raw, r"val.list: line 2 is not a patient\\d\+_frame\\d\+ name")
    (raw / "val.list").unlink()
    _expect(raw, r"SSL4MIS h5 files hold ACDC; --dataset=prostate_md", dataset="prostate_md")
    _expect(raw, r"--n4: the ssl4mis_h5 files are already intensity-preprocessed", n4=True)
    _expect(raw, r"--phases=ED,XX: expected ED, ES or ED,ES", phases=("ED", "XX"))
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    _expect(empty, r"no patientXXX_frameYY\[_slice_N\].h5 files found")


def test_pixel_spacing_refused_for_raw_layout(tmp_path):
    from _data_helpers import write_acdc

    raw = write_acdc(tmp_path / "raw", patients=(1,))
    with pytest.raises(InputError, match="--pixel_spacing: applies to --layout original_cropped and ssl4mis_h5"):
        preprocess.preprocess_dataset("acdc", raw, tmp_path / "pp", pixel_spacing=(1.0, 1.0, 1.0))


def test_cli(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12)}, lists={"train": [], "val": [], "test": [1]})
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "synthetic", "--layout", "ssl4mis_h5",
                        "--raw_dir", str(raw), "--out_dir", str(tmp_path / "pp")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "preprocessed 2 volumes (2 labeled" in r.stdout and "HD95/ASSD units: pixels" in r.stdout
    assert "warning: HD95/ASSD will be reported in pixels only" in r.stderr
    assert json.loads((tmp_path / "pp" / "dataset.json").read_text())["phases"] == ["ED", "ES"]
    (raw / "data" / "patient001_frame12.h5").write_bytes(b"garbage" * 30)
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "synthetic", "--layout", "ssl4mis_h5",
                        "--raw_dir", str(raw), "--out_dir", str(tmp_path / "pq")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "patient001_frame12.h5: cannot read as HDF5" in lines[0]
