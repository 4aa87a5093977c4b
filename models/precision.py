"""Numerical precision of the models (``--precision``): the Keras mixed-precision policy.

* ``fp32``: everything in float32 (the default; the originals' precision).
* ``mixed_bfloat16``: layers compute in bfloat16, variables stay float32 (fast on GPUs with bf16
  tensor cores and on CPUs with AVX512_BF16 / AMX; no loss scaling needed: bfloat16 has float32's
  exponent range).
* ``mixed_float16``: layers compute in float16, variables stay float32; training multiplies the
  loss by a dynamic loss scale (``keras.optimizers.LossScaleOptimizer``, see
  ``training.engine.steps``) so that small gradients do not underflow float16.

What stays float32 under every policy: the variables (so weights files and checkpoints are the same
in every precision and load into any of them), BatchNormalization's moments (Keras upcasts), and the
output layer of every model (``OUTPUT_DTYPE``: the UNet's logits layer and the last layer of each
projection head), so the softmax, every loss and every exported output are computed in float32.

The policy is process-global in Keras and is read when a layer is created: build models inside
:func:`precision_policy`, which restores the previous policy on exit.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from common.errors import InputError

PRECISIONS = ("fp32", "mixed_bfloat16", "mixed_float16")
DEFAULT_PRECISION = "fp32"
# --precision value -> Keras dtype policy name.
POLICY = {"fp32": "float32", "mixed_bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}
# Dtype of the output layer of every model (logits, projections): losses and softmax in float32.
OUTPUT_DTYPE = "float32"
HELP = ("numerical precision: fp32, or Keras mixed precision with float32 variables, logits and losses "
        "(mixed_bfloat16; mixed_float16 with dynamic loss scaling in training)")
INFERENCE_HELP = ("precision of the network: fp32 (default), mixed_bfloat16 or mixed_float16 (float32 logits and "
                  "outputs); a SavedModel runs at the precision it was exported with")


def check_precision(precision: str, flag: str = "--precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        InputError: any other value.
    """
    if precision not in PRECISIONS:
        raise InputError(f"{flag} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def define_precision_flag(flag_values: Any = None) -> None:
    """Define ``--precision`` (default None = fp32) for the inference scripts (evaluate, predict, export)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_enum("precision", None, list(PRECISIONS), INFERENCE_HELP, flag_values=fv)


def uses_loss_scaling(precision: str) -> bool:
    """True for the precision whose training needs dynamic loss scaling (float16)."""
    return check_precision(precision) == "mixed_float16"


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Set the Keras global dtype policy of ``precision`` for the models built inside the block.

    Layers keep the policy they were created with, so models built inside keep computing in that
    precision after the block; the previous global policy is restored on exit.
    """
    import keras

    name = POLICY[check_precision(precision)]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def precision_of(model: Any) -> str:
    """The ``--precision`` value a Keras model was built with (from its dtype policy)."""
    name = model.dtype_policy.name
    for precision, policy in POLICY.items():
        if policy == name:
            return precision
    raise ValueError(f"model {model.name!r} has dtype policy {name!r}, not one of {sorted(POLICY.values())}")
