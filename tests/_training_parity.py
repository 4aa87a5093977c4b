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

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests._parity_models import data, run, union  # noqa: E402


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
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
