"""The ``reduction`` argument shared by every loss (docs/INTERFACES.md, ``losses/``).

Each loss computes one value per unit (image, anchor or pair) whose plain mean is the loss, so the
training engine can ask for the per-unit values and scale them once by the global batch size under a
distribution strategy.
"""
from __future__ import annotations

import tensorflow as tf

from common.errors import InputError

REDUCTIONS = ("mean", "none")


def check_reduction(reduction: str) -> None:
    """Raise ``InputError`` (a ``ValueError``) unless ``reduction`` is ``"mean"`` or ``"none"``."""
    if reduction not in REDUCTIONS:
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def reduce_per_unit(per_unit: tf.Tensor, reduction: str) -> tf.Tensor:
    """``per_unit`` (U,) as is for ``"none"``, its mean (scalar) for ``"mean"``."""
    check_reduction(reduction)
    return per_unit if reduction == "none" else tf.reduce_mean(per_unit)
