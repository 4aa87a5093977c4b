"""scripts/gpu_smoke.sh --cpu: the GPU readiness script runs end to end on a machine without a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests._training_data import tiny_data  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_smoke_cpu_writes_step_times_and_runs_the_mini_pipeline(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "smoke.json"
    env = dict(os.environ, PYTHON=sys.executable, DATA_DIR=str(tiny_data), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--cpu", str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU") and "not GPU numbers" in result["device"]
    assert list(result["runs"]) == ["fp32"]  # --cpu: fp32 only (the GPU run adds mixed_bfloat16)
    step_s = result["runs"]["fp32"]["step_s"]
    assert step_s["supervised"] > 0 and step_s["joint"] > 0
    assert 0.0 <= result["pipeline"]["test_dice_plc"] <= 1.0
    assert json.loads(proc.stdout[proc.stdout.index("{\n"):]) == result  # printed too
    # The JSON is what the reproduction's dry run reads for its projection.
    from training.reproduction import load_step_times, projection

    times = load_step_times(out)
    proj = projection({"supervised": 10, "joint": 10, "global": 5}, times)
    assert proj["hours"] > 0 and proj["unmeasured"] == {"global": 5}


def test_gpu_smoke_refuses_to_run_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_smoke"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no GPU visible to TensorFlow")
