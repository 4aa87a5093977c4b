"""bench.ops / bench.op_worker: the worker protocol, interleaving, ratios, oneDNN verbose parsing, a quick run."""
from __future__ import annotations

import math
import os
import sys
import textwrap

import pytest

from bench import ops as bench_ops_mod
from bench.ops import (ELEMENTWISE, OPS_BASIC, OPS_FULL, Worker, bench_ops, ours_workers, parse_verbose, plan,
                       probe_kernels, ratios, time_groups, totals)

VERBOSE_V1 = ("onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,"
              "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb8a::f0 bia:undef::undef::: dst:f32::blocked:acdb::f0,"
              "attr-scratchpad:user,alg:convolution_direct,mb2_ic4oc4_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1,0.25")
VERBOSE_REORDER = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 "
                   "dst:f32:p:blocked:Acdb8a::f0,,,4x4x3x3,0.5")
VERBOSE_OLD = ("onednn_verbose,exec,cpu,convolution,jit:avx2,forward_training,src_f32::blocked:acdb:f0,,"
               "alg:convolution_direct,mb2_ic4oc4_ih8oh8kh3,1.5")
VERBOSE_INFO = "onednn_verbose,v1,info,cpu,isa:Intel AVX2"

FAKE_WORKER = textwrap.dedent(f"""
    import os, sys, time
    from bench.op_worker import Unsupported, serve

    def build(spec):
        op = spec["op"]
        if op == "unsupported":
            raise Unsupported("not here")
        if op == "boom":
            raise ValueError("boom")
        if op == "conv_fwd":  # prints what oneDNN's verbose mode would, on file descriptor 1
            def fn():
                os.write(1, b"{VERBOSE_INFO}\\nnoise\\n{VERBOSE_REORDER}\\n{VERBOSE_V1}\\n")
            return fn
        delay = spec["delay"] * (2 if sys.argv[1] == "slow" else 1)
        print("stray text on stdout must not reach the parent")
        return lambda: time.sleep(delay)

    serve(build, {{"name": sys.argv[1]}})
""")


@pytest.fixture
def fake_workers(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = {name: Worker(name, [sys.executable, str(script), name], env, 60) for name in ("fast", "slow")}
    yield workers
    for w in workers.values():
        w.close()


def test_time_groups_interleaves_and_reports_problems(fake_workers):
    assert fake_workers["fast"].hello == {"name": "fast"}
    groups = [{"key": "sleep/s/b1", "spec": {"delay": 0.002},
               "members": [("fast", "sleep"), ("slow", "sleep"), ("fast", "unsupported"), ("slow", "boom")]}]
    med, fastest, problems, load = time_groups(groups, fake_workers, rounds=2, reps=2)
    assert set(load) <= {"sleep/s/b1"}
    assert set(med["sleep/s/b1"]) == {"fast:sleep", "slow:sleep"}
    assert 0.002 <= fastest["sleep/s/b1"]["fast:sleep"] <= med["sleep/s/b1"]["fast:sleep"]
    assert med["sleep/s/b1"]["slow:sleep"] > med["sleep/s/b1"]["fast:sleep"]
    assert problems == {"sleep/s/b1": {"fast:unsupported": "not here", "slow:boom": "ValueError: boom"}}
    assert fake_workers["fast"].ask({"clear": True}) == {"cleared": 0}  # time_groups cleared after the group


def test_a_silent_worker_is_killed_after_its_timeout():
    with pytest.raises(RuntimeError, match="did not start: boom"):
        Worker("mute", [sys.executable, "-c", "import sys, time; sys.stderr.write('boom\\n'); time.sleep(30)"],
               os.environ, timeout_s=1.0)


def test_probe_captures_onednn_lines_of_file_descriptor_1(fake_workers):
    groups = [{"key": "conv_fwd/s/b1", "spec": {"batch": 1}, "members": [("fast", "conv_fwd"), ("slow", "conv_fwd")]},
              {"key": "step/b1x32", "spec": {"batch": 1}, "members": [("fast", "conv_fwd")]}]
    k = probe_kernels(groups, fake_workers["fast"], "fast", batch=1)
    assert k["info"] == ["cpu,isa:Intel AVX2"]
    assert list(k["ops"]) == ["conv_fwd/s/b1"]  # steps are not probed
    entries = k["ops"]["conv_fwd/s/b1"]["conv_fwd"]
    assert [(e["primitive"], e["impl"], e["count"]) for e in entries] == [("reorder", "jit:uni", 1),
                                                                          ("convolution", "jit:avx2", 1)]


def test_parse_verbose_both_formats_and_aggregation():
    e = parse_verbose([VERBOSE_V1, VERBOSE_V1, VERBOSE_OLD, VERBOSE_INFO, "onednn_verbose,exec"])
    assert len(e) == 2
    assert e[0] == {"primitive": "convolution", "impl": "jit:avx2", "prop": "forward_training",
                    "formats": "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb8a::f0 bia:undef::undef::: "
                               "dst:f32::blocked:acdb::f0", "aux": "alg:convolution_direct",
                    "problem": "mb2_ic4oc4_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1", "count": 2, "ms": 0.5}
    assert e[1]["formats"] == "src_f32::blocked:acdb:f0" and e[1]["ms"] == 1.5
    bn = parse_verbose(["onednn_verbose,v1,primitive,exec,cpu,batch_normalization,bnorm_tbb_jit:avx2,"
                        "forward_training,data:f32::blocked:acdb::f0,,flags:CHR,mb4ic16ih32iw32,0.3"])
    assert bn[0]["aux"] == "flags:CHR" and bn[0]["problem"] == "mb4ic16ih32iw32"


def test_ratios_and_totals_hand_numbers():
    seconds = {"conv_fwd/a/b20": {"ours_onednn:conv_fwd": 1.0, "ours_eigen:conv_fwd": 4.0, "peer:conv_fwd": 2.0},
               "conv_fwd/b/b20": {"ours_onednn:conv_fwd": 3.0, "peer:conv_fwd": 2.0},
               "step/b20x192": {"ours_onednn:step_baseline": 2.0, "peer:step": 3.0},
               "relu_fwd_bwd/a/b20": {"ours_onednn:relu_fwd_bwd": 1.0}}
    assert ratios(seconds) == {"conv_fwd/a/b20": {"ours_onednn:conv_fwd": 2.0, "ours_eigen:conv_fwd": 0.5},
                               "conv_fwd/b/b20": {"ours_onednn:conv_fwd": 2.0 / 3.0},
                               "step/b20x192": {"ours_onednn:step_baseline": 1.5}}
    # a member missing on one shape is left out of the totals
    assert totals(seconds) == {"conv_fwd/b20": {"ours_onednn:conv_fwd": 4.0, "peer:conv_fwd": 4.0},
                               "relu_fwd_bwd/b20": {"ours_onednn:relu_fwd_bwd": 1.0}}


def test_plan_members():
    workers = ours_workers(2)
    assert workers["ours_onednn_threads"]["threads"] == (2, 1)
    groups = plan({"s": (16, 4, 4, 3), "t": (16, 2, 4, 3)}, [2], {2: ("step_baseline", "step_baseline_keras_bn")},
                  {2: ("step_baseline",)}, 32, workers, peer=True)
    by_key = {g["key"]: g for g in groups}
    # shape t has the same (size, cout) as s: its BN / element-wise groups are not repeated
    assert set(by_key) == ({f"{op}/s/b2" for op in OPS_FULL} | {"step/b2x32"}
                           | {f"{op}/t/b2" for op in OPS_FULL if op not in ELEMENTWISE})
    assert by_key["conv_fwd/s/b2"]["members"] == [
        ("ours_onednn", "conv_fwd"), ("ours_onednn", "conv_fwd_nchw"), ("ours_onednn", "conv_fwd_xla"),
        ("ours_eigen", "conv_fwd"), ("ours_onednn_threads", "conv_fwd"), ("peer", "conv_fwd")]
    assert ("ours_eigen", "block_fwd") not in by_key["block_fwd/s/b2"]["members"] and "block_fwd" not in OPS_BASIC
    assert by_key["step/b2x32"]["members"] == [
        ("ours_onednn", "step_baseline"), ("ours_onednn", "step_baseline_keras_bn"),
        ("ours_onednn_threads", "step_baseline"), ("peer", "step")]
    assert all(m[0] != "peer" for g in plan({"s": (16, 4, 4, 3)}, [2], {}, {}, 32, workers, peer=False)
               for m in g["members"])


def test_quick_run_of_our_onednn_worker():
    r = bench_ops(quick=True, variants=["ours_onednn"], rounds=1, reps=1, probe=False, steps=False)
    assert r["kind"] == r["cpu"]["kind"] and r["quick"] and "ours_vs_peer" in r and r["ours_vs_peer"] == {}
    assert r["workers"]["ours_onednn"]["library"] == "tensorflow"
    assert r["workers"]["ours_onednn"]["threads"]["env"]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    expected = {f"{peer_op}/{shape}/b2" for peer_op in OPS_FULL for shape in bench_ops_mod.QUICK_SHAPES}
    assert set(r["seconds"]) == expected and set(r["load_average"]) <= set(r["seconds"])
    timed = {m for members in r["seconds"].values() for m in members}
    assert {"ours_onednn:conv_fwd_xla", "ours_onednn:conv_bwd_filter_nchw", "ours_onednn:bn_fwd_bwd",
            "ours_onednn:bn_keras_fwd_bwd", "ours_onednn:block_fwd_bwd_keras_bn"} <= timed
    assert all(math.isfinite(v) and v > 0 for members in r["seconds"].values() for v in members.values())
    assert set(r["totals"]) == {f"{peer_op}/b2" for peer_op in OPS_FULL}


def test_step_op_of_our_worker_runs_the_project_step():
    step = bench_ops_mod._tf_op({"op": "step_baseline", "batch": 2, "size": 32})
    assert math.isfinite(step()) and math.isfinite(step())
