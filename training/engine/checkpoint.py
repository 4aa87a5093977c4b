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
