"""Checkpoints of a training stage: resumable state (``W/ckpt``), best-by-validation weights
(``W/best``), final weights (``W/final``) and the small JSON files beside them.

* ``W/ckpt/`` — ``tf.train.CheckpointManager`` over every stateful object of the stage (UNet, heads,
  optimizer, step counter, running best Dice). TensorFlow writes the data files first and updates the
  ``checkpoint`` index atomically, so a process killed while saving leaves the previous checkpoint
  usable.
* ``W/best/model.weights.h5`` + ``best.json`` — UNet weights (``build_unet``-compatible) with the best
  validation Dice, written atomically.
* ``W/final/model.weights.h5`` — UNet weights at the end of the stage.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from data.atomic import atomic_write_json, remove_temp_leftovers

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


def save_weights_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save_weights`` to a temporary ``.weights.h5`` sibling, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.weights.h5", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # keras refuses to overwrite silently in some versions; write a fresh file
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_best(model: keras.Model, workdir: str | os.PathLike, step: int, val_dice: float,
              extra: dict | None = None) -> None:
    """Write ``W/best/model.weights.h5`` and ``W/best/best.json`` (``{"step", "val_dice"}``)."""
    best = Path(workdir) / "best"
    save_weights_atomic(model, best / "model.weights.h5")
    atomic_write_json(best / "best.json", {"step": int(step), "val_dice": float(val_dice),
                                           **(extra or {})})


def read_best(workdir: str | os.PathLike) -> dict | None:
    """Contents of ``W/best/best.json`` or None."""
    path = Path(workdir) / "best" / "best.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_final(model: keras.Model, workdir: str | os.PathLike) -> None:
    """Write ``W/final/model.weights.h5``."""
    save_weights_atomic(model, Path(workdir) / "final" / "model.weights.h5")


def partial_restore(checkpoint_prefix: str, **objects: Any) -> None:
    """Restore only ``objects`` (e.g. ``model=unet``) from a checkpoint written by ``Checkpointer``.

    Objects absent from the call (optimizer, heads) are ignored; used to seed a stage from another
    stage's resumable checkpoint when no ``.weights.h5`` file is available.
    """
    tf.train.Checkpoint(**objects).restore(checkpoint_prefix).expect_partial()


def remove_stale_temps(workdir: str | os.PathLike) -> list[Path]:
    """Delete temporaries of writes that a killed run of this stage left in ``workdir`` (checkpoints,
    weights, JSON, pseudo-labels); ``eval_*`` folders (evaluate.py's) are left alone."""
    return remove_temp_leftovers(workdir, extra=TF_TEMP_NAMES, skip_dirs=("eval_",))
