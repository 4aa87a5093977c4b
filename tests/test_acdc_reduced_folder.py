"""scripts/acdc_reduced_folder.py: the reduced real-ACDC folder (README "Real-data runs") on tiny files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from configs import acdc

ROOT = Path(__file__).resolve().parent.parent


def _cropped(root: Path, ids) -> None:
    for vid in ids:
        d = root / f"patient{vid}"
        d.mkdir(parents=True)
        aff = np.diag([1.36719, 1.36719, 1.0, 1.0])
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), aff), str(d / "img_cropped.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), aff), str(d / "mask_cropped.nii.gz"))


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "acdc_reduced_folder.py"), *args],
                          capture_output=True, text=True)


def test_split_of_the_originals_and_links(tmp_path):
    test_ids = [v for v in acdc.TEST if v != "090"]
    pool = [v for v in acdc.TR52 if v != "002"]
    _cropped(tmp_path / "R", ["002", "011", "071"] + test_ids[:4] + pool[:5])
    proc = _run("--cropped_dir", str(tmp_path / "R"), "--out_dir", str(tmp_path / "O"), "--n_test", "3",
                "--n_unlabeled", "4")
    assert proc.returncode == 0, proc.stderr
    split = json.loads((tmp_path / "O" / "split.json").read_text())
    assert split == {"tr1": {"c1": ["002"]}, "val": ["011", "071"], "test": test_ids[:3], "unlabeled": pool[:4]}
    info = json.loads((tmp_path / "O" / "dataset.json").read_text())
    assert info["labels"] == {"0": "background", "1": "rv", "2": "myo", "3": "lv"} and info["numTraining"] == 10
    link = tmp_path / "O" / "imagesTr" / "002.nii.gz"
    assert link.is_symlink() and link.resolve() == (tmp_path / "R" / "patient002" / "img_cropped.nii.gz").resolve()
    assert (tmp_path / "O" / "labelsTr" / f"{pool[0]}.nii.gz").is_symlink()


def test_errors(tmp_path):
    _cropped(tmp_path / "R", ["002", "011"])  # 071 (validation) missing
    proc = _run("--cropped_dir", str(tmp_path / "R"), "--out_dir", str(tmp_path / "O"))
    assert proc.returncode == 2 and "patients ['071'] are missing" in proc.stderr
    (tmp_path / "exists").mkdir()
    proc = _run("--cropped_dir", str(tmp_path / "R"), "--out_dir", str(tmp_path / "exists"))
    assert proc.returncode == 2 and "exists" in proc.stderr


def test_extra_validation_volumes_never_come_from_test_or_pool(tmp_path):
    test_ids = [v for v in acdc.TEST if v != "090"]
    pool = [v for v in acdc.TR52 if v != "002"]
    _cropped(tmp_path / "R", ["002", "011", "071"] + test_ids[:2] + pool[:2] + list(acdc.TR52_VAL[:4]))
    proc = _run("--cropped_dir", str(tmp_path / "R"), "--out_dir", str(tmp_path / "O"), "--n_test", "2",
                "--n_unlabeled", "2", "--n_extra_val", "3")
    assert proc.returncode == 0, proc.stderr
    split = json.loads((tmp_path / "O" / "split.json").read_text())
    assert split["val"] == ["011", "071", *acdc.TR52_VAL[:3]]
    assert not set(split["val"]) & (set(acdc.TEST) | set(acdc.TR52) | {"002"})
    proc = _run("--cropped_dir", str(tmp_path / "R"), "--out_dir", str(tmp_path / "O2"), "--n_extra_val", "5")
    assert proc.returncode == 2 and "only 4 of" in proc.stderr
