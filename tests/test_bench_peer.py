"""bench.peer (PyTorch peer subprocess and ratios), bench.demo_projection, bench.matmul."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from bench.demo_projection import project_demo_seconds
from bench.matmul import matmul_peak_gflops  # imports TensorFlow at collection, as most test modules do
from bench.peer import RATIO_BASIS, ours_vs_peer, parse_records, run_peer

PEER_RECORDS = [
    {"peer": "chaitanya_unet_pytorch", "batch": 20, "size": 192, "median_step_s": 2.5, "imgs_per_s": 8.0,
     "threads": 2},
    {"peer": "chaitanya_unet_pytorch", "batch": 40, "size": 192, "median_step_s": 5.0, "imgs_per_s": 8.0,
     "threads": 2},
    {"peer": "chaitanya_unet_pytorch", "batch": 8, "size": 64, "median_step_s": 0.08, "imgs_per_s": 100.0,
     "threads": 2},
]


def _fake_peer(tmp_path: Path, exit_code: int = 0, records: list[dict] | None = None) -> Path:
    lines = ["print('Warning: some log line from torch')"]
    lines += [f"print({json.dumps(json.dumps(r))}, flush=True)" for r in (PEER_RECORDS if records is None
                                                                          else records)]
    lines += ["print('[1, 2]')", "import sys", "sys.stderr.write('first\\nRuntimeError: boom\\n')" if exit_code
              else "pass", f"sys.exit({exit_code})"]
    script = tmp_path / "fake_peer.py"
    script.write_text("\n".join(lines) + "\n")
    return script


def test_run_peer_parses_json_lines_and_skips_junk(tmp_path):
    records, error = run_peer(sys.executable, _fake_peer(tmp_path), timeout_s=60)
    assert error is None
    assert records == PEER_RECORDS


def test_run_peer_passes_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    script = tmp_path / "env_peer.py"
    script.write_text("import json, os\nprint(json.dumps({'isa': os.environ.get('ONEDNN_MAX_CPU_ISA')}))\n")
    records, error = run_peer(sys.executable, script, timeout_s=60)
    assert error is None and records == [{"isa": "AVX2"}]


def test_failing_peer_sets_error_without_raising(tmp_path):
    records, error = run_peer(sys.executable, _fake_peer(tmp_path, exit_code=1, records=PEER_RECORDS[:1]),
                              timeout_s=60)
    assert records == PEER_RECORDS[:1]  # what it printed before failing is kept
    assert "status 1" in error and "RuntimeError: boom" in error and "\n" not in error


def test_peer_without_json_or_python_sets_error(tmp_path):
    records, error = run_peer(sys.executable, _fake_peer(tmp_path, records=[]), timeout_s=60)
    assert records == [] and "no JSON record" in error
    records, error = run_peer(tmp_path / "no_python", _fake_peer(tmp_path), timeout_s=60)
    assert records == [] and error.startswith("peer could not start") and "\n" not in error


def test_peer_timeout_sets_error(tmp_path):
    script = tmp_path / "slow_peer.py"
    script.write_text("import time\ntime.sleep(30)\n")
    records, error = run_peer(sys.executable, script, timeout_s=0.5)
    assert records == [] and "timed out after 0.5 s" in error


def test_parse_records_keeps_objects_only():
    assert parse_records('junk\n{"a": 1}\n[1]\n3\n\n{"b": 2}') == [{"a": 1}, {"b": 2}]


def test_ours_vs_peer_hand_numbers():
    ours = {"192x192": {"baseline_images_per_s": 10.0, "joint_images_per_s": 6.0, "seg_only_40_step_s": 4.0},
            "64x64": {"baseline_images_per_s": 150.0}}
    ratios = ours_vs_peer(ours, PEER_RECORDS)
    assert ratios == pytest.approx({"20x192": 10.0 / 8.0, "40x192": 6.0 / 8.0,
                                    "40x192_seg_only": (40 / 4.0) / 8.0, "8x64": 150.0 / 100.0})
    assert set(ratios) <= set(RATIO_BASIS)


def test_ours_vs_peer_leaves_out_what_one_side_lacks():
    quick = {"64x64": {"baseline_images_per_s": 50.0}}
    assert ours_vs_peer(quick, PEER_RECORDS) == pytest.approx({"8x64": 0.5})
    other = [dict(r, peer="ssl4mis_unet") for r in PEER_RECORDS]
    assert ours_vs_peer(quick, other) == {}
    assert ours_vs_peer(quick, []) == {}


def test_project_demo_seconds_hand_computed():
    preset = {"baseline_iters": 300, "joint_rounds": 2, "joint_iters_per_round": 150, "val_every": 25}
    p = project_demo_seconds({"baseline_step_s": 0.2, "joint_step_s": 0.5}, preset, overhead_s=150.0)
    # 300 * 0.2 = 60; 2 * 150 * 0.5 = 150; + 150
    assert p["baseline_steps_s"] == pytest.approx(60.0)
    assert p["joint_steps_s"] == pytest.approx(150.0)
    assert p["total_s"] == pytest.approx(360.0)
    assert p["joint_iters"] == 300 and p["validations"] == 300 // 25 + 300 // 25


def test_project_demo_seconds_reads_the_demo_preset():
    from training.pipeline import PRESETS

    d = PRESETS["demo"]
    p = project_demo_seconds({"baseline_step_s": 1.0, "joint_step_s": 1.0}, d, overhead_s=0.0)
    assert p["total_s"] == d["baseline_iters"] + d["joint_rounds"] * d["joint_iters_per_round"]
    two = project_demo_seconds({"baseline_step_s": 1.0, "joint_step_s": 1.0}, d, overhead_s=0.0, joint_runs=2)
    assert two["total_s"] == d["baseline_iters"] + 2 * d["joint_rounds"] * d["joint_iters_per_round"]


def test_matmul_peak_gflops_small():
    r = matmul_peak_gflops(n=64, repeats=3)
    assert r["n"] == 64 and r["dtype"] == "float32"
    assert math.isfinite(r["gflops"]) and r["gflops"] > 0


def test_missing_peer_python_is_a_usage_error(monkeypatch, capsys, tmp_path):
    from bench import training

    monkeypatch.setattr(sys, "argv", ["bench.training", "--peer_python", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        training.main()
    assert e.value.code == 2
    assert "--peer_python" in capsys.readouterr().err
