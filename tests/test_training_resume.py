"""Resume after SIGKILL: rerunning the same command continues from the last checkpoint and ends at
the same final step, with readable files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests._training_data import tiny_data  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parent.parent


def test_kill_and_rerun_baseline(tiny_data, tmp_path):  # noqa: F811
    wd = tmp_path / "w"
    cmd = [sys.executable, "train_selftrain.py", "--stage=baseline", "--dataset=synthetic", f"--data_dir={tiny_data}",
           f"--workdir={wd}", "--no_of_tr_imgs=tr1", "--n_iter=24", "--ckpt_every=3", "--val_every=1000",
           "--jit_compile=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (wd / "ckpt" / "checkpoint").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # What a kill during a write leaves (names as seen in bench/kill_soak.py): the rerun removes them.
    stale = [wd / "ckpt" / "ckpt-99_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1",
             wd / "ckpt" / "checkpoint.tmp0123abcd", wd / "best" / ".model.weights.ab12.tmp.weights.h5",
             wd / ".metrics.json.x9y8.tmp", wd / "eval_test" / ".summary.json.q1.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half-written")
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from step" in rerun.stdout
    resumed_at = int(rerun.stdout.split("resuming from step")[1].split()[0])
    assert 3 <= resumed_at < 24
    summary = json.loads((wd / "summary.json").read_text())
    assert summary["step"] == 24
    metrics = json.loads((wd / "metrics.json").read_text())
    steps = [e["step"] for e in metrics["train"]]
    assert steps == sorted(set(steps)) and steps[-1] == 24
    assert [e["step"] for e in metrics["val"]] == [1, 24]
    assert [p for p in stale if p.exists()] == [stale[-1]]  # evaluate.py's folder is not the stage's
    stale[-1].unlink()
    assert not list(wd.rglob(".*.tmp*")) and not list(wd.rglob("*_temp"))  # no temp files left behind
    index = (wd / "ckpt" / "checkpoint").read_text()
    assert "ckpt-24" in index
