"""One worker of the two-process MultiWorkerMirroredStrategy test (tests/test_training_multiworker.py).

Run with ``TF_CONFIG`` set: ``python tests/_multiworker_worker.py OUT DATA_DIR W_BASE W_JOINT PL_DIR``.

1. Parity: one baseline step and one joint step of the tiny models of ``tests._parity_models``; worker
   ``i`` feeds unit ``i`` (the test compares with one process fed the union), then a step whose unit is
   NaN on worker 1 only (every worker must skip it).
2. Stages: a 2-step baseline (``W_BASE``) and a 2 x 1-step joint stage from it (``W_JOINT``; round 0
   on the pseudo-labels in ``PL_DIR``, round end with the best-state restore and new pseudo-labels);
   both workers get the same workdirs, as on a shared file system.

Every write is recorded with its path: Python-level writes through an audit hook (``open`` for
writing, rename / replace, mkdir, remove) and the TensorFlow writers of the engine (``Checkpointer.save``,
``tf.summary.create_file_writer``), so the test can check that only the chief writes into the workdirs.
Writes ``OUT/worker<i>.json`` and ``OUT/worker<i>_<kind>.npz`` (weights after the step).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, ".")

WRITES: list[list[str]] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS):
            WRITES.append(["open", os.fsdecode(args[0])])
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                WRITES.append([event, os.fsdecode(a)])


def main(out: str, data_dir: str, w_base: str, w_joint: str, pl_dir: str) -> None:
    t0 = time.time()
    import numpy as np
    import tensorflow as tf

    from tests import _parity_models as pm
    from tests._training_data import stage_conf
    from training.engine import checkpoint as ck
    from training.engine import strategy as strat

    save = ck.Checkpointer.save

    def recorded_save(self, step):
        WRITES.append(["checkpoint", str(self.directory)])
        return save(self, step)

    ck.Checkpointer.save = recorded_save
    create_writer = tf.summary.create_file_writer

    def recorded_writer(logdir, *args, **kwargs):
        WRITES.append(["summary", str(logdir)])
        return create_writer(logdir, *args, **kwargs)

    tf.summary.create_file_writer = recorded_writer
    sys.addaudithook(_audit)

    print(f"worker: imports done ({time.time() - t0:.0f}s, cpu {time.process_time():.0f}s)", flush=True)
    strategy = strat.make_strategy()
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    task = int(strategy.cluster_resolver.task_id)
    res = {"pid": os.getpid(), "task": task, "replicas": int(strategy.num_replicas_in_sync),
           "chief": strat.is_chief(strategy), "start_s": time.time() - t0}
    # The joint stage's skip decision: True on one worker only must read True on every worker.
    res["any_worker"] = [strat.any_worker(strategy, task == 1), strat.any_worker(strategy, False)]
    units = [pm.data(1), pm.data(2)]
    for kind in ("baseline", "joint"):
        t1 = time.time()
        step, models, opt = pm.build_step(kind, strategy)
        loss, _, applied = step(pm.batch_of(kind, strategy, units))
        weights = pm.weights_of(models)
        res[kind] = {"loss": float(loss), "applied": bool(applied)}
        np.savez(os.path.join(out, f"worker{task}_{kind}.npz"), *weights)
        print(f"worker {task}: {kind} step ({time.time() - t1:.1f}s)", flush=True)
    # A NaN unit on worker 1 only: every worker must skip the step (nothing changes anywhere).
    bad = dict(units[1], x_lab=np.full_like(units[1]["x_lab"], np.nan))
    _, applied = step(pm.batch_of("joint", strategy, [units[0], bad]))[1:]
    after = pm.weights_of(models)
    res["nan"] = {"applied": bool(applied), "iterations": int(opt.iterations.numpy()),
                  "max_weight_change": max(float(np.abs(a - b).max()) for a, b in zip(weights, after))}
    res["parity_s"] = time.time() - t0
    print(f"worker {task}: parity steps done ({res['parity_s']:.0f}s, cpu {time.process_time():.0f}s)", flush=True)

    from training.stages.joint import run_joint
    from training.stages.supervised import run_supervised

    # no augmentation: its tf.data tracing costs ~6 s of CPU per worker and is not under test here
    base = run_supervised(stage_conf("baseline", data_dir, w_base, n_iter=2, data_aug=0))
    res["stages"] = {"baseline_step": base["step"]}
    print(f"worker {task}: baseline done ({time.time() - t0:.0f}s, cpu {time.process_time():.0f}s)", flush=True)
    joint = run_joint(stage_conf("joint", data_dir, w_joint, init_from=w_base, rounds=2, n_iter_per_round=1,
                                 val_every=1, ckpt_every=1, data_aug=0, pseudo_label_dir=pl_dir))
    res["stages"].update(joint_step=joint["step"], joint_rounds=[r["round"] for r in joint["rounds"]])
    print(f"worker {task}: joint done ({time.time() - t0:.0f}s, cpu {time.process_time():.0f}s)", flush=True)
    res["writes"] = WRITES
    res["seconds"] = time.time() - t0
    with open(os.path.join(out, f"worker{task}.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
