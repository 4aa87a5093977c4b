"""bench.step_breakdown: the six step variants, their times and the derived fractions."""
from __future__ import annotations

import math

from bench.step_breakdown import FRACTIONS, VARIANTS, breakdown, fractions


def test_breakdown_small():
    r = breakdown(32, 2, images=2)
    assert r["size"] == 32 and r["images"] == 2 and r["rounds"] == 2
    assert set(r["seconds"]) == set(VARIANTS)
    assert all(math.isfinite(t) and t > 0 for t in r["seconds"].values())
    assert set(r["seconds_min"]) == set(VARIANTS)
    assert all(0 < r["seconds_min"][k] <= r["seconds"][k] for k in VARIANTS)
    assert set(r["fractions"]) == set(FRACTIONS)
    assert all(math.isfinite(f) for f in r["fractions"].values())
    threads = r["threads"]
    assert {"intra_op_parallelism_threads", "inter_op_parallelism_threads", "os_cpu_count"} <= set(threads)
    assert threads["os_cpu_count"] >= 1


def test_fractions_hand_numbers():
    t = {"a_forward": 1.0, "b_forward_loss": 1.5, "c_forward_loss_grad": 4.0, "d_hand_step": 4.5,
         "e_full_step": 5.0, "f_full_step_no_bn_guard": 4.75}
    f = fractions(t)
    assert f == {"forward_share": 0.2, "loss_share": 0.1, "backward_share": 0.5, "optimizer_share": 0.1,
                 "guard_distribution_overhead": 0.1, "bn_guard_copies": 0.05}
