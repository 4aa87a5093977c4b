"""Distribution parity: one step on 2 logical CPU replicas with batches b1, b2 equals one step on
1 replica with b1 U b2 (baseline and joint steps, synchronized BatchNorm), and a non-finite batch
on one replica skips the update on all of them, also a float16 gradient overflow on one replica
under loss scaling. Runs tests/_training_parity.py in a subprocess
because the logical devices must be configured before TensorFlow starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_two_replicas_equal_one_replica_with_union_batch():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "tests/_training_parity.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    for kind in ("baseline", "joint"):
        r = res[kind]
        assert r["applied"]
        assert abs(r["loss_1"] - r["loss_2"]) < 1e-5 * max(1.0, abs(r["loss_1"]))
        assert r["max_update"] > 1e-3  # the step really moved the weights ...
        assert r["max_weight_diff"] < 1e-5  # ... identically (weights and BN statistics)
    nan = res["nan"]
    assert not nan["applied"] and nan["iterations"] == 0 and nan["all_finite"]
    assert nan["max_weight_change"] == 0.0  # BN statistics restored too
    # mixed_float16: gradients overflowing on replica 1 only skip the step on both replicas and
    # halve the loss scale (Keras' scaler alone would follow replica 0 and apply inf), then a clean
    # step applies.
    fp16 = res["fp16"]
    assert fp16["status_overflow"] == 2 and fp16["scale"] == 2.0 ** 14 and fp16["iterations"] == 0
    assert fp16["max_weight_change"] == 0.0
    assert fp16["status_ok"] == 1 and fp16["iterations_after"] == 1 and fp16["all_finite"]
