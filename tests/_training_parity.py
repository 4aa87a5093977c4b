"""Distribution parity check, run in a subprocess by tests/test_training_distribution.py.

Splits the CPU into 2 logical devices (must happen before TensorFlow initializes), then for the
baseline step and the joint step compares one step on 2 replicas fed batches b1, b2 with one step
on 1 replica fed b1 U b2 (tiny models with synchronized BatchNorm). Prints one JSON line.
"""
from __future__ import annotations

import json
import sys

sys.path.insert(0, ".")

from training.engine.strategy import configure_devices, make_strategy  # noqa: E402

configure_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests._parity_models import data, run, tiny_unet, union  # noqa: E402
from training.engine import steps  # noqa: E402


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
    single, double = tf.distribute.get_strategy(), make_strategy(2)
    u1, u2 = data(1), data(2)
    out = {}
    for kind in ("baseline", "joint"):
        l1, a1, _, w1, _ = run(kind, single, [union(u1, u2)])
        l2, a2, _, w2, _ = run(kind, double, [u1, u2])
        _, _, _, w0, _ = run(kind, single, [union(u1, u2)], lr=0.0)
        out[kind] = {"loss_1": l1, "loss_2": l2, "applied": a1 and a2,
                     "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
                     "max_update": max(float(np.abs(a - b).max()) for a, b in zip(w1, w0))}
    bad = dict(u2, x_lab=np.full_like(u2["x_lab"], np.nan))
    _, applied, before, w_nan, iters = run("joint", double, [u1, bad])
    out["nan"] = {"applied": applied, "iterations": iters, "all_finite": all(np.all(np.isfinite(a)) for a in w_nan),
                  "max_weight_change": max(float(np.abs(a - b).max()) for a, b in zip(w_nan, before))}
    out["fp16"] = fp16_overflow_on_one_replica()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
