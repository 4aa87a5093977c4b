"""Resumable checkpoints of a training stage (``W/ckpt``). The best-by-validation and final weights
(``W/best``, ``W/final``) are written by :mod:`workdir` (``save_best``, ``save_final``).

* ``W/ckpt/`` — ``tf.train.CheckpointManager`` over every stateful object of the stage (UNet, heads,
  optimizer, step counter, running best Dice). TensorFlow writes the data files first and updates the
  ``checkpoint`` index atomically, so a process killed while saving leaves the previous checkpoint
  usable.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tensorflow as tf

from common.atomic import remove_temp_leftovers
from common.errors import warn

# TensorFlow's checkpoint temporaries: the ``<prefix>_temp`` directory of a save in progress, the
# ``*.tempstate<n>`` files of a merge and the ``checkpoint.tmp<hex>`` file of an index update.
TF_TEMP_NAMES = (re.compile(r"^ckpt-\d+_temp$"), re.compile(r"\.tempstate\d+$"),
                 re.compile(r"^checkpoint\.tmp[0-9a-f]+$"))


class TrainState(tf.Module):
    """Counters that must survive a restart: completed iterations and the running best Dice.

    Both are TF variables so that they are saved in the same checkpoint as the weights (a resumed
    run therefore never sees weights and counters from different moments).
    """

    def __init__(self) -> None:
        super().__init__(name="train_state")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="running_best")
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
        self.nonfinite = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite")
        # Steps skipped by float16 loss scaling (absent from checkpoints written before it: stays 0).
        self.overflow = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_scale_overflows")
        self.last_val = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="last_val")
        self.rounds_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="rounds_done")


class Checkpointer:
    """Resumable checkpoints in ``directory`` (a thin layer over ``tf.train.CheckpointManager``).

    Args:
        directory: where the checkpoints go (``W/ckpt``; a temporary directory on non-chief
            workers).
        max_to_keep: checkpoints kept on disk (the originals' ``Saver(max_to_keep=2)``).
        restore_from: where checkpoints are restored from (default ``directory``). Multi-worker:
            every worker saves (non-chief workers into their temporary directory, as TensorFlow's
            guide does) but all of them restore the chief's checkpoints, so they resume together.
        **objects: trackables to save (``model=``, ``optimizer=``, ``state=`` ...).
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2,
                 restore_from: str | os.PathLike | None = None, **objects: Any) -> None:
        self.directory = Path(directory)
        self.restore_dir = Path(restore_from) if restore_from is not None else self.directory
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                                  max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint to restore, or None."""
        if self.restore_dir == self.directory:
            return self.manager.latest_checkpoint
        return tf.train.latest_checkpoint(str(self.restore_dir))

    def restore_latest(self) -> bool:
        """Restore the newest checkpoint if there is one; returns whether something was restored."""
        path = self.latest
        if path is None:
            return False
        self.checkpoint.restore(path).expect_partial()
        return True

    def save(self, step: int) -> str:
        """Save all objects under number ``step``; returns the checkpoint prefix."""
        return self.manager.save(checkpoint_number=int(step))


def remove_stale_temps(workdir: str | os.PathLike) -> list[Path]:
    """Delete temporaries of writes that a killed run of this stage left in ``workdir`` (checkpoints,
    weights, JSON, pseudo-labels); ``eval_*`` folders (evaluate.py's) are left alone."""
    return remove_temp_leftovers(workdir, extra=TF_TEMP_NAMES, skip_dirs=("eval_",))


# Keras 3 names of an Adam optimizer's slots in a tf.train checkpoint (read by carry_adam_state).
ADAM_KEY = "optimizer/_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"
ITERATIONS_KEY = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def carry_adam_state(ckpt: str, adam: Any, count: int) -> int:
    """Copy the Adam moments of the first ``count`` variables (and the iteration counter) from the
    checkpoint ``ckpt`` (``training.stages.joint.warm_start_checkpoint``) into ``adam``; returns how many were copied.

    Why (``--plc_warm_start``): a fresh Adam's first updates are sign steps of the full learning
    rate on every weight (bias-corrected ``m / sqrt(v)`` = +-1), which throws a trained network far off
    (measured: validation Dice 0.54 -> 0.26 after one step). With the baseline's moments the joint
    stage continues at the baseline's own update scale. The baseline's optimizer was built on its
    UNet's trainable variables, in the order the joint stage lists them first (checked by shape); the
    ``h`` head keeps fresh moments. When the checkpoint's optimizer does not fit, nothing is copied
    (0) and one line says that Adam starts fresh.
    """
    reader = tf.train.load_checkpoint(ckpt)
    pairs = list(zip(adam._momentums, adam._velocities))[:count]  # Keras 3 Adam slots, in variable order
    if reader.has_tensor(ADAM_KEY.format(2 + 2 * count)):  # an optimizer over other variables too
        warn(f"[joint] {ckpt}: its optimizer holds more than the UNet's variables; Adam starts fresh")
        return 0
    values = []
    for j, (m, v) in enumerate(pairs):
        km, kv = ADAM_KEY.format(2 + 2 * j), ADAM_KEY.format(3 + 2 * j)  # 0: iteration, 1: learning rate
        if not (reader.has_tensor(km) and reader.has_tensor(kv)):
            warn(f"[joint] {ckpt}: no Adam moments for UNet variable {j} of {count}; Adam starts fresh")
            return 0
        a, b = reader.get_tensor(km), reader.get_tensor(kv)
        if tuple(a.shape) != tuple(m.shape) or tuple(b.shape) != tuple(v.shape):
            warn(f"[joint] {ckpt}: optimizer slot {j} has shape {a.shape}, not {tuple(m.shape)}; "
                 "Adam starts fresh")
            return 0
        values.append((a, b))
    for (m, v), (a, b) in zip(pairs, values):
        m.assign(a)
        v.assign(b)
    if reader.has_tensor(ITERATIONS_KEY):
        adam.iterations.assign(reader.get_tensor(ITERATIONS_KEY))
    else:
        warn(f"[joint] {ckpt}: no Adam iteration count; its bias correction starts at step 0")
    return len(values)
