"""MultiWorkerMirroredStrategy across two processes on 127.0.0.1 (TF_CONFIG per process).

Both workers run tests/_multiworker_worker.py: one baseline and one joint step of tiny models, where
worker i feeds unit i, must equal one process fed the union of both units (loss and weights, BN
statistics included); a NaN unit on worker 1 only must make both workers skip the step; then a 2-step
baseline stage sharing one workdir (as on a shared file system) must leave summaries, best
weights, final weights and checkpoints written by the chief only, the other worker's files going to
its temporary directory, which is removed when it exits.

Then a 2 x 1-step joint stage on both workers from that baseline (warm start from its best state,
round end with the chief's best state, new pseudo-labels, the collective skip decision); round 0
trains on given pseudo-labels (the ground truth) so that only the round end predicts any.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests._training_data import tiny_data  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _inside(path: str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def _ground_truth_pseudo_labels(data_dir: Path, out: Path) -> None:
    """A complete pseudo-label directory (``<id>.nii.gz`` + ``manifest.json`` with the default flags'
    settings) holding the labels of the unlabeled pool."""
    import shutil

    import configs

    out.mkdir(parents=True)
    ids = list(configs.get_split("synthetic", "tr1", "c1").unlabeled)
    for vid in ids:
        shutil.copyfile(data_dir / vid / "label.nii.gz", out / f"{vid}.nii.gz")
    (out / "manifest.json").write_text(json.dumps({"kept": ids, "rejected": [], "crf": False, "tta_filter": False,
                                                   "f1_threshold": 0.9, "seed": 0}))


def test_two_workers_equal_one_process_and_only_the_chief_writes(tiny_data, tmp_path):  # noqa: F811
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    w_base, w_joint, pl_dir = tmp_path / "W_base", tmp_path / "W_joint", tmp_path / "pl"
    _ground_truth_pseudo_labels(tiny_data, pl_dir)
    args = [str(tmp_path), str(tiny_data), str(w_base), str(w_joint), str(pl_dir)]
    procs, logs = [], []
    try:
        for i in range(2):
            (tmp_path / f"tmp{i}").mkdir()
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_path / f"tmp{i}"),
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            logs.append(open(tmp_path / f"worker{i}.log", "w"))
            procs.append(subprocess.Popen([sys.executable, "tests/_multiworker_worker.py", *args], cwd=ROOT,
                                          env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
        deadline = time.time() + TIMEOUT_S
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"workers still running after {TIMEOUT_S} s; worker logs:\n" + "\n".join(
                    (tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2)))
    finally:
        for p in procs:  # always end both, also when one failed and left its peer waiting
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-4000:]
    res = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [r["task"] for r in res] == [0, 1] and [r["chief"] for r in res] == [True, False]
    assert all(r["replicas"] == 2 for r in res)
    assert [r["any_worker"] for r in res] == [[True, False], [True, False]]  # collective skip decision

    # 1. One step on 2 workers with units u1, u2 == one step in one process with u1 U u2.
    from tests import _parity_models as pm
    import tensorflow as tf

    u1, u2 = pm.data(1), pm.data(2)
    for kind in ("baseline", "joint"):
        loss, applied, before, ref, _ = pm.run(kind, tf.distribute.get_strategy(), [pm.union(u1, u2)])
        assert applied and max(float(np.abs(a - b).max()) for a, b in zip(ref, before)) > 1e-3  # it moved
        for i, r in enumerate(res):
            assert r[kind]["applied"]
            assert abs(r[kind]["loss"] - loss) < 1e-5 * max(1.0, abs(loss)), (kind, i, r[kind]["loss"], loss)
            with np.load(tmp_path / f"worker{i}_{kind}.npz") as z:
                got = [z[f"arr_{k}"] for k in range(len(z.files))]
            assert len(got) == len(ref)
            assert max(float(np.abs(a - b).max()) for a, b in zip(got, ref)) < 1e-5, (kind, i)
    for r in res:  # then NaN on worker 1 only: nobody updates anything (weights, BN statistics, SGD)
        assert r["nan"] == {"applied": False, "iterations": 1, "max_weight_change": 0.0}

    # 2. Stages: same final steps on both workers; only the chief wrote into the workdirs.
    stages = {"baseline_step": 2, "joint_step": 2, "joint_rounds": [0, 1]}
    workdirs = [w_base, w_joint]
    for r in res:
        assert r["stages"] == stages
    chief, other = res
    assert not [w for w in other["writes"] if any(_inside(w[1], wd) for wd in workdirs)]
    other_ckpts = [w[1] for w in other["writes"] if w[0] == "checkpoint"]
    assert other_ckpts and all(_inside(c, tmp_path / "tmp1") for c in other_ckpts)  # saves are collective
    assert not [w for w in other["writes"] if w[0] == "summary"]
    assert {Path(w[1]) for w in chief["writes"] if w[0] == "summary"} == {
        wd / run for wd in workdirs for run in ("train", "eval")}
    assert {Path(w[1]) for w in chief["writes"] if w[0] == "checkpoint"} == {
        w_base / "ckpt", w_base / "best_state", w_joint / "ckpt", w_joint / "best_state"}
    assert [w for w in chief["writes"] if w[0] == "os.rename" and _inside(w[1], w_base / "best")]  # best weights
    events = [e for wd in workdirs for e in wd.rglob("events.out.tfevents.*")]
    assert len(events) == 2 * len(workdirs) and all(f".{chief['pid']}." in e.name for e in events)
    for wd in workdirs:
        for name in ("config.json", "metrics.json", "summary.json", "best/model.weights.h5", "best/best.json",
                     "final/model.weights.h5", "ckpt/checkpoint"):
            assert (wd / name).is_file(), wd / name
        assert json.loads((wd / "summary.json").read_text())["step"] == 2
    assert (w_joint / "pseudo_labels" / "round_1" / "manifest.json").is_file()
    assert not list((tmp_path / "tmp1").iterdir())  # the non-chief's temporary workdirs are gone
