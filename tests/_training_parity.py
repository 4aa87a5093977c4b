"""Distribution parity check, run in a subprocess by tests/test_training_distribution.py.

Splits the CPU into 2 logical devices (must happen before TensorFlow initializes), then for the
baseline step and the joint step compares one step on 2 replicas fed batches b1, b2 with one step
on 1 replica fed b1 U b2 (tiny models with synchronized BatchNorm). Prints one JSON line.
"""
from __future__ import annotations

import functools
import json
import sys

sys.path.insert(0, ".")

from training.engine.strategy import configure_devices, make_strategy  # noqa: E402

configure_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data.plc_selection import sample_anchors  # noqa: E402
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss  # noqa: E402
from losses.segmentation import segmentation_loss  # noqa: E402
from models.heads import build_h  # noqa: E402
from training.engine import steps  # noqa: E402

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


def run(kind, replicas, units, lr=0.5):
    strategy = make_strategy(replicas) if replicas > 1 else tf.distribute.get_strategy()
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
        units = [(u["x_lab"], u["y_lab"]) for u in units]
    else:
        variables = unet.trainable_variables + h.trainable_variables
        compute = steps.joint_compute(two_out, h, seg, pseudo_label_local_contrastive_loss, 0.1)
    with strategy.scope():
        opt = keras.optimizers.SGD(lr)
        opt.build(variables)
    step = steps.make_train_step(strategy, compute, variables, opt,
                                 state_variables=unet.non_trainable_variables + h.non_trainable_variables)
    if replicas == 1:
        batch = tf.nest.map_structure(tf.constant, units[0])
    else:
        batch = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.nest.map_structure(tf.constant, units[ctx.replica_id_in_sync_group]))
    before = [v.numpy() for v in unet.weights + h.weights]
    loss, _, applied = step(batch)
    run.before = before
    weights = [v.numpy() for v in unet.weights + h.weights]  # incl. BN moving statistics
    return float(loss), bool(applied), weights, int(opt.iterations.numpy())


def fp16_overflow_on_one_replica():
    """mixed_float16 on 2 replicas: the scaled gradients overflow on replica 1 only. Every replica
    must skip (the scaler halves the scale), then a step without overflow applies."""
    from models.precision import precision_policy

    strategy = make_strategy(2)
    keras.utils.set_random_seed(3)
    with precision_policy("mixed_float16"), strategy.scope():
        unet = tiny_unet()
    variables = unet.trainable_variables

    def compute(batch, replicas):
        x, k = batch
        logits = tf.cast(unet(x, training=True), tf.float32)  # (N, H, H, C)
        loss = k[0] * tf.reduce_sum(logits) / float(replicas)
        return loss, {"loss_sum": loss}

    opt = steps.make_optimizer(1e-3, variables, strategy, loss_scale=True)
    step = steps.make_train_step(strategy, compute, variables, opt, state_variables=unet.non_trainable_variables)
    x = tf.constant(data(1)["x_lab"])

    def batch(ks):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: (x, tf.constant([ks[ctx.replica_id_in_sync_group]], tf.float32)))

    before = [v.numpy() for v in unet.weights]
    _, _, status = step(batch([1e-7, 10.0]))
    after = [v.numpy() for v in unet.weights]
    out = {"status_overflow": int(status), "scale": float(opt.dynamic_scale.numpy()),
           "iterations": int(opt.iterations.numpy()),
           "max_weight_change": max(float(np.abs(a - b).max()) for a, b in zip(after, before))}
    _, _, status = step(batch([1e-7, 1e-7]))
    out.update(status_ok=int(status), iterations_after=int(opt.iterations.numpy()),
               all_finite=all(np.all(np.isfinite(v.numpy())) for v in unet.weights))
    return out


def main():
    u1, u2 = data(1), data(2)
    out = {}
    for kind in ("baseline", "joint"):
        l1, a1, w1, _ = run(kind, 1, [union(u1, u2)])
        l2, a2, w2, _ = run(kind, 2, [u1, u2])
        _, _, w0, _ = run(kind, 1, [union(u1, u2)], lr=0.0)
        out[kind] = {"loss_1": l1, "loss_2": l2, "applied": a1 and a2,
                     "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
                     "max_update": max(float(np.abs(a - b).max()) for a, b in zip(w1, w0))}
    bad = dict(u2, x_lab=np.full_like(u2["x_lab"], np.nan))
    _, applied, w_nan, iters = run("joint", 2, [u1, bad])
    out["nan"] = {"applied": applied, "iterations": iters, "all_finite": all(np.all(np.isfinite(a)) for a in w_nan),
                  "max_weight_change": max(float(np.abs(a - b).max()) for a, b in zip(w_nan, run.before))}
    out["fp16"] = fp16_overflow_on_one_replica()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
