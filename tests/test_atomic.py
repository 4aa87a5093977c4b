"""common.atomic: atomic writes and the removal of temporaries that a killed writer left behind."""
from __future__ import annotations

import json

from common import atomic
from training.engine.checkpoint import remove_stale_temps


def test_atomic_write_json_replaces_and_leaves_no_temporary(tmp_path):
    atomic.atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic.atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_remove_stale_temps_of_a_killed_stage(tmp_path):
    """Every temporary the stage's writers create (names made by the writers themselves where they
    are ours, TensorFlow's as observed in the kill soak) goes; finished files and other programs'
    folders stay."""
    wd = tmp_path / "W"
    keep = ["metrics.json", "best/model.weights.h5", "ckpt/checkpoint", "ckpt/ckpt-5.index",
            "ckpt/ckpt-5.data-00000-of-00001", "pseudo_labels/round_1/001.nii.gz", "notes.tmp",
            "eval_test/.per_volume.csv.abc123.tmp", "train/events.out.tfevents.1.host.2.0.v2"]
    for rel in keep:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text("x")
    stale = [atomic._tmp_sibling(wd / "metrics.json"),  # atomic_write_*
             atomic._tmp_sibling(wd / "pseudo_labels/round_1/002.nii.gz", suffix=".nii.gz"),  # atomic_save_nifti
             wd / "best" / ".model.weights.k2j3h4.tmp.weights.h5",  # checkpoint.save_weights_atomic
             wd / "ckpt" / "checkpoint.tmp4f2a9c0d1e",  # TF index update
             wd / "ckpt" / "ckpt-30.index.tempstate88123"]  # TF merge
    for p in stale[2:]:
        p.write_text("half")
    tf_dir = wd / "ckpt" / "ckpt-25_temp"  # TF save in progress
    tf_dir.mkdir()
    (tf_dir / "part-00000-of-00001.data-00000-of-00001.tempstate388").write_text("half")
    with atomic.atomic_dir(wd / "final"):  # a finished atomic_dir leaves nothing
        pass
    killed_dir = wd / "pseudo_labels" / ".round_2.x7y8.tmp"  # atomic_dir of a killed writer
    (killed_dir / "sub").mkdir(parents=True)
    removed = remove_stale_temps(wd)
    assert set(removed) == set(stale) | {tf_dir, killed_dir}
    assert all((wd / rel).read_text() == "x" for rel in keep)
    assert not [p for p in stale + [tf_dir, killed_dir] if p.exists()]
    assert remove_stale_temps(wd) == [] and remove_stale_temps(tmp_path / "missing") == []
