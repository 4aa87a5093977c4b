"""--dataset custom: the MSD / nnU-Net folder reader, the derived config and splits, the data dir's
dataset.json, and one-line errors for bad folders (no TensorFlow in this file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import configs
from configs import custom
from data import custom_config as cc
from data import msd_folder, store
from common.errors import InputError
from data.preprocess import preprocess_dataset
from data.volume_prep import preprocessed_affine
from data.preprocess_custom import preprocess_custom
from tests._custom_data import SPACINGS, oblique_affine, phantom, write_msd, write_nnunet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def msd(tmp_path):
    return write_msd(tmp_path / "Task01_Organ")


@pytest.fixture
def nnunet(tmp_path):
    return write_nnunet(tmp_path / "Dataset001_Lesion")


def _expect(raw, match, **kw):
    """preprocess_custom must raise a one-line InputError and leave no output behind."""
    out = raw.parent / "pp"
    with pytest.raises(InputError, match=match) as exc:
        preprocess_custom(raw, out, **kw)
    assert "\n" not in str(exc.value)
    assert not out.exists() and not [p for p in raw.parent.iterdir() if p.name.startswith(".")]
    return str(exc.value)


# ------------------------------------------------------------------------------------ reader
def test_read_msd_folder(msd):
    ds = msd_folder.read_folder(msd, channel=0)
    assert ds.style == "msd" and not ds.channel_files
    assert ds.label_names == ("background", "whole organ", "core") and ds.channel_names == ("T2", "NEG")
    assert ds.labeled_ids == [f"organ_{i:03d}" for i in range(6)]
    unlabeled = [s.id for s in ds.sources if s.label_path is None]
    assert unlabeled == ["organ_006", "organ_007"]  # imagesTr images without a label
    assert all(s.channel == 0 and s.layout == "custom" for s in ds.sources)
    assert [p.name for p in ds.test_images] == ["organ_008.nii.gz"]


def test_read_nnunet_v2_folder(nnunet):
    ds = msd_folder.read_folder(nnunet)
    assert ds.style == "nnunet_v2" and ds.channel_files and ds.label_names == ("background", "lesion")
    assert ds.labeled_ids == [f"case_{i:03d}" for i in range(6)]
    unl = [s for s in ds.sources if s.label_path is None]
    assert [s.id for s in unl] == ["case_006", "case_007"] and unl[0].image_path.parent.name == "imagesUnlabeled"
    assert all(s.image_path.name.endswith("_0000.nii.gz") and s.channel is None for s in ds.sources)
    assert [p.name for p in ds.test_images] == ["case_008_0000.nii.gz"]


def test_nnunet_v1_channel_files_with_msd_json(tmp_path):
    """nnU-Net v1 converted MSD folders: MSD dataset.json, images as <case>_0000.nii.gz."""
    root = write_msd(tmp_path / "v1", num_labeled=4, num_unlabeled=0)
    for path in sorted((root / "imagesTr").glob("*.nii.gz")) + sorted((root / "imagesTs").glob("*.nii.gz")):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
        for k in range(2):
            nib.save(nib.Nifti1Image(data[..., k], img.affine), str(path.parent / path.name.replace(".nii.gz", f"_000{k}.nii.gz")))
        path.unlink()
    ds = msd_folder.read_folder(root, channel=1)
    assert ds.channel_files and ds.labeled_ids == [f"organ_{i:03d}" for i in range(4)]
    assert all(s.image_path.name.endswith("_0001.nii.gz") for s in ds.sources)
    assert ds.test_images[0].name == "organ_004_0001.nii.gz"


def test_label_maps_of_both_styles(tmp_path):
    path = tmp_path / "dataset.json"
    assert msd_folder.parse_labels({"labels": {"1": "a", "0": "bg", "2": "b"}}, path) == ("msd", ("bg", "a", "b"))
    assert msd_folder.parse_labels({"labels": {"bg": 0, "b": 2, "a": 1}}, path) == ("nnunet_v2", ("bg", "a", "b"))
    bad = [({}, "'labels' must be a non-empty object"),
           ({"labels": {"background": 0, "tumour": [1, 2]}, "channel_names": {"0": "T1"}}, "region"),
           ({"labels": {"0": "bg", "2": "a"}}, r"0..C-1 with 0 = background, got \[0, 2\]"),
           ({"labels": {"1": "a", "2": "b"}}, "got \\[1, 2\\]"),
           ({"labels": {"0": "bg"}}, "only the background"),
           ({"labels": {"bg": 0, "a": "x"}, "file_ending": ".nii.gz"}, "not an integer")]
    for info, match in bad:
        with pytest.raises(InputError, match=match) as exc:
            msd_folder.parse_labels(info, path)
        assert str(exc.value).startswith(str(path))


def test_folder_errors(msd, nnunet, tmp_path):
    _expect(tmp_path / "nope", "directory not found")
    (msd / "dataset.json").write_text("{not json")
    _expect(msd, r"Task01_Organ/dataset.json: invalid JSON")
    (msd / "dataset.json").write_text("[1, 2]")
    _expect(msd, r"dataset.json: expected a JSON object")
    (msd / "dataset.json").unlink()
    _expect(msd, r"Task01_Organ/dataset.json: not found")
    # several channels and no --channel: named before any image is read
    info = json.loads((nnunet / "dataset.json").read_text())
    (nnunet / "dataset.json").write_text(json.dumps({**info, "channel_names": {"0": "T1", "1": "T2"}}))
    _expect(nnunet, r"dataset.json: lists 2 channels \(0 T1, 1 T2\); choose the one to segment with --channel")
    _expect(nnunet, r"--channel=2: .*dataset.json lists 2 channel", channel=2)
    _expect(nnunet, r"case 'case_000' has no channel 1 file", channel=1)
    (nnunet / "dataset.json").write_text(json.dumps({**info, "numTraining": 5}))
    _expect(nnunet, r"dataset.json: numTraining is 5 but labelsTr/ holds 6 labels")
    (nnunet / "dataset.json").write_text(json.dumps({**info, "file_ending": ".mha"}))
    _expect(nnunet, r"file_ending '.mha' is not supported")
    (nnunet / "dataset.json").write_text(json.dumps(info))
    os.rename(nnunet / "imagesTr" / "case_001_0000.nii.gz", nnunet / "case_001_0000.nii.gz")
    _expect(nnunet, r"labelsTr/case_001.nii.gz: label without an image")
    os.rename(nnunet / "case_001_0000.nii.gz", nnunet / "imagesUnlabeled" / "case_000_0000.nii.gz")
    (nnunet / "labelsTr" / "case_001.nii.gz").unlink()
    (nnunet / "dataset.json").write_text(json.dumps({**info, "numTraining": 5}))
    _expect(nnunet, r"imagesUnlabeled/case_000_0000.nii.gz: case 'case_000' is also in imagesTr/")


def test_volume_errors(msd):
    _expect(msd, r"dataset.json: lists 2 channels")  # 4-D images without --channel
    info = json.loads((msd / "dataset.json").read_text())
    (msd / "dataset.json").write_text(json.dumps({k: v for k, v in info.items() if k != "modality"}))
    _expect(msd, r"imagesTr/organ_000.nii.gz: 4-D image with 2 channels .* choose one with --channel")
    (msd / "dataset.json").write_text(json.dumps(info))
    lab = msd / "labelsTr" / "organ_002.nii.gz"
    img = nib.load(str(lab))
    data = np.asarray(img.dataobj).copy()
    nib.save(nib.Nifti1Image(data, img.affine @ np.diag([1, 1, 1.5, 1])), str(lab))
    _expect(msd, r"labelsTr/organ_002.nii.gz: label affine differs from the affine of .*organ_002.nii.gz", channel=0)
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, img.affine), str(lab))
    _expect(msd, r"labelsTr/organ_002.nii.gz: label values 3 outside 0..2", channel=0)
    nib.save(nib.Nifti1Image(data[:-1], img.affine), str(lab))
    _expect(msd, r"labelsTr/organ_002.nii.gz: label shape \(39, 26, 3\) differs from image shape", channel=0)
    (msd / "labelsTr" / "organ_002.nii.gz").unlink()
    _expect(msd, r"'training' lists ./labelsTr/organ_002.nii.gz but .* does not exist", channel=0)


# ------------------------------------------------------------------------- derived config
def test_derivation_rules_by_hand():
    assert cc.median_resolution([(0.9, 1.2, 3), (0.8, 1.3, 9), (1.0, 1.1, 1)]) == (0.9, 1.2)
    # extents: 40*0.9/0.9 = 40 -> 64; 26*1.2/1.2 = 26 -> 32; a 300 px extent is capped at 256
    assert cc.derive_image_size([(40, 26)], [(0.9, 1.2)], (0.9, 1.2)) == (64, 32)
    # x: 36 and 300 px -> capped at 256; y: 26 and 50 px -> 64
    assert cc.derive_image_size([(40, 26), (100, 100)], [(0.9, 1.2), (3.0, 0.6)], (1.0, 1.2)) == (256, 64)
    assert cc.derive_image_size([(64, 64)], [(1.0, 1.0)], (1.0, 1.0)) == (64, 64)  # exact multiples stay
    assert cc.class_weights(2) == (0.1, 0.9) and cc.class_weights(4) == (0.1, 0.3, 0.3, 0.3)
    assert cc.default_min_seg_classes(2) == 2 == cc.default_min_seg_classes(3)
    assert cc.default_min_seg_classes(4) == 3 == cc.default_min_seg_classes(8)
    counts = np.array([1] * 60 + [2] * 30 + [3] * 8 + [4] * 2)  # labels per slice of 100 slices
    assert cc.fraction_at_least(counts, 3) == 0.10 and cc.fraction_at_least(counts, 4) == 0.02
    assert cc.choose_min_classes(counts, 4, 2, 0.05) == 3  # 2 % hold all 4, 10 % hold >= 3
    assert cc.choose_min_classes(counts, 3, 1, 0.10) == 3
    assert cc.choose_min_classes(counts, 3, 1, 0.50) == 1
    assert cc.choose_min_classes(np.array([1, 1]), 3, 2, 0.05) == 2  # never below the floor
    assert cc.struct_name("whole organ", 1) == "whole_organ" and cc.struct_name(" ?? ", 2) == "class2"
    assert cc.parse_pair("0.8", "target_resolution", float) == (0.8, 0.8)
    assert cc.parse_pair("96,64", "image_size", int) == (96, 64) and cc.parse_pair(None, "x", int) is None
    with pytest.raises(InputError, match="--image_size=1,2,3"):
        cc.parse_pair("1,2,3", "image_size", int)
    assert cc.parse_crf_params(None) == cc.DEFAULT_CRF == (0.01, 0.5, 10.0, 10.0, 30.0, 30)
    assert cc.parse_crf_params("0.1,1,5,3,10,5") == (0.1, 1.0, 5.0, 3.0, 10.0, 5)
    for bad in ("1,2,3", "0,1,1,1,1,1", "1,1,1,1,1,2.5", "a,b,c,d,e,f"):
        with pytest.raises(InputError, match="--crf_params"):
            cc.parse_crf_params(bad)


def test_default_split():
    labeled = [f"c{i:02d}" for i in range(10)]
    all_ids = labeled + ["u0", "u1"]
    s = cc.default_split(labeled, all_ids, seed=3, source="d.json")
    assert s == cc.default_split(labeled, all_ids, seed=3, source="d.json")  # deterministic
    assert s != cc.default_split(labeled, all_ids, seed=4, source="d.json")
    assert len(s["test"]) == 2 and len(s["val"]) == 2  # 20 % of 10
    rest = sorted(set(labeled) - set(s["test"]) - set(s["val"]))
    assert s["trall"] == {"c1": rest} and sorted(s) == ["test", "tr1", "tr2", "trall", "unlabeled", "val"]
    for k in (1, 2):
        combs = s[f"tr{k}"]
        assert list(combs) == ["c1", "c2", "c3"] and len({tuple(v) for v in combs.values()}) == 3
        assert all(len(v) == k and set(v) <= set(rest) for v in combs.values())
    assert s["unlabeled"] == sorted(set(all_ids) - set(s["test"]) - set(s["val"]))  # labeled ones included
    s = cc.default_split([f"c{i:02d}" for i in range(13)], [], seed=0, source="d.json")
    assert len(s["test"]) == 3 and s["tr8"] == s["trall"] and len(s["trall"]["c1"]) == 8  # one 8-subset of 8
    small = cc.default_split(["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"], seed=0, source="d.json")
    assert len(small["tr1"]) == 2 and small["tr2"] == {"c1": small["trall"]["c1"]}  # fewer when few cases
    assert "tr8" not in small
    with pytest.raises(InputError, match=r"d.json: 3 labeled case\(s\); the default split needs at least 4"):
        cc.default_split(["a", "b", "c"], ["a", "b", "c"], seed=0, source="d.json")


def test_split_file(tmp_path):
    ids, labeled = ["a", "b", "c", "d", "u"], ["a", "b", "c", "d"]
    path = tmp_path / "s.json"

    def load(obj):
        path.write_text(json.dumps(obj))
        return cc.load_split_file(path, ids, labeled)

    s = load({"tr1": {"c1": ["a"], "c2": ["b"]}, "few": ["a", "b"], "val": ["c"], "test": ["d"]})
    assert s["tr1"] == {"c1": ["a"], "c2": ["b"]} and s["few"] == {"c1": ["a", "b"]}
    assert s["unlabeled"] == ["a", "b", "u"]  # default: everything but val and test
    table = custom.split_table(s)
    assert table.train[("tr1", "c2")] == ("b",) and table.train[custom.POOL_KEY] == ("a", "b", "u")
    bad = [({"tr1": {"c1": ["zz"]}, "val": ["c"]}, r"s.json: tr1/c1 lists unknown volume id\(s\) zz"),
           ({"tr1": {"c1": ["u"]}, "val": ["c"]}, r"s.json: tr1/c1 lists volume\(s\) without a label: u"),
           ({"tr1": {"c1": ["a"]}, "val": ["a"]}, r"s.json: volume\(s\) a are in both tr1/c1 and val"),
           ({"tr1": {"c1": ["a"]}, "val": ["c"], "test": ["c"]}, r"in both val and test"),
           ({"tr1": {"c1": ["a"]}, "val": ["b"], "test": ["d"], "unlabeled": ["d"]}, r"test volume\(s\) d are in "
                                                                                   "the unlabeled pool"),
           ({"tr1": {"c1": ["a"]}}, r"'val' must list at least one labeled volume"),
           ({"val": ["c"]}, "no labeled set"),
           ({"tr1": {"c1": "a"}, "val": ["c"]}, r"tr1/c1 must be a list of volume ids"),
           ({"tr1": {"c1": ["a", "a"]}, "val": ["c"]}, r"tr1/c1 lists a more than once"),
           ([1], "splits must be a JSON object")]
    for obj, match in bad:
        with pytest.raises(InputError, match=match) as exc:
            load(obj)
        assert str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="nope.json: --split_file not found"):
        cc.load_split_file(tmp_path / "nope.json", ids, labeled)


# ---------------------------------------------------------------- preprocessing + dataset.json
def test_preprocess_msd_writes_complete_config(msd, tmp_path):
    out = tmp_path / "P"
    s = preprocess_custom(msd, out, channel=0)
    info = store.read_dataset_json(out)
    cfg = configs.get_config("custom", out)
    assert info["dataset"] == "custom" and info["config"] == custom.config_to_dict(cfg)
    assert cfg.num_classes == 3 and cfg.struct_names == ("whole_organ", "core")
    assert cfg.target_resolution == (0.9, 1.2)  # medians of SPACINGS[:8] in x and y
    assert cfg.image_size == (64, 32)  # extents 38-44 x 24-28 px -> multiples of 32
    assert cfg.class_weights == (0.1, 0.45, 0.45) and cfg.min_seg_classes == 2
    assert cfg.min_contrastive_classes == 3 and cfg.contrastive_classes == 3 and not cfg.contrastive_background
    assert cfg.crf_params == cc.DEFAULT_CRF and cfg.input_channel == 0 and cfg.unlabeled_pool == custom.POOL_KEY
    assert info["splits"] == cc.default_split(info["labeled_ids"], info["ids"], 0, "x")
    split = configs.get_split("custom", "tr1", "c2", data_dir=out)
    assert split.labeled == tuple(info["splits"]["tr1"]["c2"]) and split.val == tuple(info["splits"]["val"])
    assert split.unlabeled == tuple(info["splits"]["unlabeled"]) and "organ_007" in split.unlabeled
    assert info["source"]["test_images"] == [str((msd / "imagesTs" / "organ_008.nii.gz").resolve())]
    assert info["slice_stats"]["with_at_least_k_labels"]["3"] == info["slice_stats"]["labeled_training_slices"] == 9
    assert s["notes"] == []
    # Volumes: channel 0 of the 4-D image, geometry of the original affine, native label kept.
    vol = store.load_volume(out, "organ_004")
    assert vol.image.shape == (3, 64, 32) and set(np.unique(vol.label)) == {0, 1, 2}
    raw_img = nib.load(str(msd / "imagesTr" / "organ_004.nii.gz"))
    np.testing.assert_allclose(vol.meta["affine"], raw_img.affine)
    assert vol.meta["spacing"] == pytest.approx(SPACINGS[4])
    pre = nib.load(str(out / "organ_004" / "image.nii.gz"))
    np.testing.assert_allclose(pre.affine, preprocessed_affine(raw_img.affine, vol.meta), atol=1e-5)
    native = store.load_native_label(out, "organ_004")
    _, label = phantom((40, 26, 3), 4, 3, seed=0)
    np.testing.assert_array_equal(np.asarray(native.dataobj), label)
    np.testing.assert_allclose(native.affine, oblique_affine(SPACINGS[4], 4), atol=1e-5)
    assert store.load_volume(out, "organ_006").label is None  # unlabeled
    # the built-in path refuses this directory, and --dataset custom refuses a built-in one
    with pytest.raises(InputError, match="needs --data_dir"):
        configs.get_config("custom")
    info["dataset"] = "acdc"
    (out / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match=r"not written by python -m data.preprocess --dataset custom"):
        configs.get_config("custom", out)


def test_preprocess_overrides_and_min_class_rules(nnunet, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"tr1": {"c1": ["case_000"]}, "val": ["case_001"], "test": ["case_002"]}))
    out = tmp_path / "P"
    preprocess_dataset("custom", nnunet, out)  # the generic entry point dispatches
    cfg = configs.get_config("custom", out)
    assert cfg.num_classes == 2 and cfg.min_seg_classes == 2 and cfg.contrastive_classes == 2
    assert cfg.contrastive_background and cfg.input_channel is None and cfg.class_weights == (0.1, 0.9)
    s = preprocess_custom(nnunet, out, split_file=split, target_resolution=(1.8, 2.4), image_size=(32, 32),
                          min_seg_classes=1, crf_params=(0.1, 1.0, 5.0, 3.0, 10.0, 5), contrastive_background=False)
    cfg = configs.get_config("custom", out)
    assert cfg.target_resolution == (1.8, 2.4) and cfg.image_size == (32, 32) and cfg.min_seg_classes == 1
    assert cfg.crf_params == (0.1, 1.0, 5.0, 3.0, 10.0, 5) and not cfg.contrastive_background
    assert s["splits"]["unlabeled"] == [i for i in s["ids"] if i not in ("case_001", "case_002")]
    assert store.load_volume(out, "case_003").image.shape == (3, 32, 32)
    with pytest.raises(InputError, match="--image_size=48,32: must be multiples of 32"):
        preprocess_custom(nnunet, tmp_path / "P2", image_size=(48, 32))
    with pytest.raises(InputError, match=r"--min_contrastive_classes=3: must lie in 2..2"):
        preprocess_custom(nnunet, tmp_path / "P2", min_contrastive_classes=3)
    assert not (tmp_path / "P2").exists()


def test_rare_classes_lower_the_joint_thresholds(tmp_path):
    """Labels whose classes rarely share a slice: the all-classes rule would skip every joint
    iteration, so the derived thresholds come down (and say so)."""
    root = write_msd(tmp_path / "raw", num_labeled=5, num_unlabeled=0, shape=(40, 26, 24))
    for path in (root / "labelsTr").glob("*.nii.gz"):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj).copy()
        data[..., 1:] = np.where(data[..., 1:] == 2, 1, data[..., 1:])  # the core only in slice 0 of 24
        nib.save(nib.Nifti1Image(data, img.affine), str(path))
    s = preprocess_custom(root, tmp_path / "P", channel=0)
    cfg = configs.get_config("custom", tmp_path / "P")
    # 2 training volumes: 2 of 48 slices (4.2 % < 5 %) hold all 3 labels, all 48 hold 2
    assert cfg.min_contrastive_classes == 2 and cfg.min_seg_classes == 2
    assert any("min_contrastive_classes lowered to 2" in n for n in s["notes"])
    assert s["slice_stats"]["with_at_least_k_labels"] == {"1": 48, "2": 48, "3": 2}


def test_config_dict_roundtrip_and_errors():
    cfg = cc.build_config(("bg", "a"), (1.0, 1.5), (64, 96), 2, 2, cc.DEFAULT_CRF, 1)
    d = custom.config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d and custom.config_from_dict(d, "x") == cfg
    assert configs.get_config("custom", recorded=d) == cfg
    with pytest.raises(InputError, match="x: dataset config lacks num_classes"):
        custom.config_from_dict({k: v for k, v in d.items() if k != "num_classes"}, "x")
    with pytest.raises(InputError, match="x: unknown dataset config field"):
        custom.config_from_dict({**d, "colour": 1}, "x")
    with pytest.raises(InputError, match="x: invalid dataset config"):
        custom.config_from_dict({**d, "struct_names": ["a", "b"]}, "x")
    with pytest.raises(InputError, match="contrastive_background must be true or false"):
        custom.config_from_dict({**d, "contrastive_background": "yes"}, "x")
    with pytest.raises(InputError, match="structure name"):
        cc.build_config(("bg", "a b", "a_b"), (1.0, 1.0), (32, 32), 2, 3, cc.DEFAULT_CRF, None)
    assert "custom" in configs.DATASETS and configs.BUILTIN == ("acdc", "prostate_md", "mmwhs", "synthetic")


def test_preprocess_cli(msd, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"tr1": {"c1": ["organ_000"]}, "val": ["organ_001"], "test": ["organ_002"]}))
    cmd = [sys.executable, "-m", "data.preprocess", "--dataset", "custom", "--raw_dir", str(msd)]
    r = subprocess.run(cmd + ["--out_dir", str(tmp_path / "P"), "--channel", "0", f"--split_file={split}",
                              "--target_resolution", "1.8,2.4"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "target resolution: 1.8 x 2.4 mm (--target_resolution)" in r.stdout
    assert "  tr1: c1 organ_000" in r.stdout and "  test (1): organ_002" in r.stdout
    assert "imagesTs: 1 image(s) for predict.py" in r.stdout and "at 1.8x2.4 mm" in r.stdout
    r = subprocess.run(cmd + ["--out_dir", str(tmp_path / "Q")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {msd / 'dataset.json'}: lists 2")
    assert not (tmp_path / "Q").exists()
    r = subprocess.run([sys.executable, "-m", "data.preprocess", "--dataset", "acdc", "--raw_dir", str(msd),
                        "--out_dir", str(tmp_path / "Q"), f"--split_file={split}"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "error: --split_file: only for --dataset custom" in r.stderr
