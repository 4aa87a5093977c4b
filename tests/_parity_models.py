"""Tiny models, batches and one training step shared by the distribution parity checks
(tests/_training_parity.py: 2 logical CPU replicas; tests/_multiworker_worker.py: 2 processes).

Importing this module imports Keras; logical devices must be configured before it.
"""
from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from data.plc_selection import sample_anchors
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
from losses.segmentation import segmentation_loss
from models.heads import build_h
from training.engine import steps

C, H, N_LAB, B, P = 3, 16, 4, 2, 3


def block(x, name, filters):
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=name)(x)


def tiny_unet():
    x_in = keras.Input((H, H, 1))
    x = block(x_in, "enc_c1_a", 4)
    x = block(x, "dec_c1_a", 4)
    y = block(x, "seg_c1_a", 4)
    y = keras.layers.Conv2D(C, 3, padding="same", use_bias=False, name="seg_fin_layer")(y)
    return keras.Model(x_in, y)


def data(seed):
    """One replica's unit: ``N_LAB`` labeled slices and ``B`` contrastive pairs with anchors."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, C, (N_LAB, H, H))
    con = rng.integers(0, C, (2 * B, H, H))
    yx, valid = sample_anchors(con, C, P, rng)
    return {"x_lab": rng.normal(size=(N_LAB, H, H, 1)).astype("f4"),
            "y_lab": np.eye(C, dtype="f4")[lab],
            "x_con": rng.normal(size=(2 * B, H, H, 1)).astype("f4"),
            "y_con": np.eye(C, dtype="f4")[con], "anchor_yx": yx, "anchor_valid": valid}


def union(u1, u2):
    """One unit holding both: labeled rows concatenated, pairs (k, B+k) kept aligned."""
    out = {"x_lab": np.concatenate([u1["x_lab"], u2["x_lab"]]), "y_lab": np.concatenate([u1["y_lab"], u2["y_lab"]])}
    for k in ("x_con", "y_con", "anchor_yx", "anchor_valid"):
        out[k] = np.concatenate([u1[k][:B], u2[k][:B], u1[k][B:], u2[k][B:]])
    return out


def build_step(kind, strategy, lr=0.5):
    """Tiny models (fixed init) and the distributed ``kind`` ("baseline" / "joint") training step.

    Returns ``(step, models, optimizer)``; ``step(batch)`` is ``training.engine.steps.make_train_step``'s.
    """
    replicas = int(strategy.num_replicas_in_sync)
    keras.utils.set_random_seed(3)
    with strategy.scope():
        unet, h = tiny_unet(), build_h(in_channels=4)
        if replicas > 1:
            steps.synchronize_batchnorm(unet)
            steps.synchronize_batchnorm(h)
        two_out = steps.joint_model(unet)
    seg = functools.partial(segmentation_loss, dsc_loss=2)
    if kind == "baseline":
        variables = unet.trainable_variables
        compute = steps.seg_compute(unet, seg)
    else:
        variables = unet.trainable_variables + h.trainable_variables
        compute = steps.joint_compute(two_out, h, seg, pseudo_label_local_contrastive_loss, 0.1)
    with strategy.scope():
        opt = keras.optimizers.SGD(lr)
        opt.build(variables)
    step = steps.make_train_step(strategy, compute, variables, opt,
                                 state_variables=unet.non_trainable_variables + h.non_trainable_variables)
    return step, (unet, h), opt


def batch_of(kind, strategy, units):
    """Replica ``r`` of ``strategy`` gets ``units[r]`` (the baseline step uses the labeled part)."""
    if kind == "baseline":
        units = [(u["x_lab"], u["y_lab"]) for u in units]
    if int(strategy.num_replicas_in_sync) == 1:
        return tf.nest.map_structure(tf.constant, units[0])
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(tf.constant, units[ctx.replica_id_in_sync_group]))


def weights_of(models):
    """Every weight of the models as NumPy arrays (BN moving statistics included)."""
    return [v.numpy() for m in models for v in m.weights]


def run(kind, strategy, units, lr=0.5):
    """One ``kind`` step from the fixed init; replica ``r`` gets ``units[r]``.

    Returns ``(loss, applied, weights before, weights after, optimizer steps)``.
    """
    step, models, opt = build_step(kind, strategy, lr)
    before = weights_of(models)
    loss, _, applied = step(batch_of(kind, strategy, units))
    return float(loss), bool(applied), before, weights_of(models), int(opt.iterations.numpy())
