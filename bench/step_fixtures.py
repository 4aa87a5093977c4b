"""The training steps and batches the benchmarks time (the project's own step builders), shared by
``bench.training``, ``bench.ops`` and ``bench.gpu_smoke``."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import tensorflow as tf

from data.plc_selection import sample_anchors
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
from losses.segmentation import segmentation_loss
from training.engine import steps

C = 4  # classes of the benchmark UNet (ACDC: background + 3 structures)


def joint_unit(rng: np.random.Generator, size: int) -> dict[str, tf.Tensor]:
    lab = rng.integers(0, C, (20, size, size))
    con = rng.integers(0, C, (20, size, size))
    yx, valid = sample_anchors(con, C, 3, rng)
    return {"x_lab": tf.constant(rng.random((20, size, size, 1)), tf.float32),
            "y_lab": tf.one_hot(lab, C), "x_con": tf.constant(rng.random((20, size, size, 1)), tf.float32),
            "y_con": tf.one_hot(con, C), "anchor_yx": tf.constant(yx), "anchor_valid": tf.constant(valid)}


def labeled_batch(rng: np.random.Generator, images: int, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A random labeled batch: images ``(images, size, size, 1)`` and one-hot labels ``(..., C)``."""
    x = tf.constant(rng.random((images, size, size, 1)), tf.float32)
    return x, tf.one_hot(rng.integers(0, C, (images, size, size)), C)


def make_baseline_step(unet: Any, jit: bool) -> Any:
    """The project's baseline training step (Dice loss, Adam) on ``unet``."""
    strategy = tf.distribute.get_strategy()
    seg = functools.partial(segmentation_loss, dsc_loss=2)
    variables = unet.trainable_variables
    return steps.make_train_step(strategy, steps.seg_compute(unet, seg), variables,
                                 steps.make_optimizer(1e-3, variables, strategy), jit_compile=jit,
                                 state_variables=unet.non_trainable_variables)


def make_joint_step(unet: Any, h: Any, jit: bool, contrastive: bool = True) -> Any:
    """The project's PLC joint step on :func:`joint_unit` batches; ``contrastive=False``: the seg-only step
    with the same 40-image forward (``h`` then takes no part)."""
    strategy = tf.distribute.get_strategy()
    seg = functools.partial(segmentation_loss, dsc_loss=2)
    models = [unet, h] if contrastive else [unet]
    variables = [v for m in models for v in m.trainable_variables]
    compute = steps.joint_compute(steps.joint_model(unet), h, seg, pseudo_label_local_contrastive_loss, 0.1,
                                  contrastive=contrastive)
    state = [v for m in models for v in m.non_trainable_variables]
    return steps.make_train_step(strategy, compute, variables, steps.make_optimizer(1e-3, variables, strategy),
                                 jit_compile=jit, state_variables=state)
