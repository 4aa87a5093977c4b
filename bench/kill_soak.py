"""Kill soak: SIGKILL a small baseline and a small joint stage at random moments, rerun the same
command each time, and check that every rerun resumes and that the workdir stays readable.

The full soak is not part of the test suite (it runs ~25 stage processes); a reduced one is
(tests/test_kill_soak.py: 3 kills per stage, tiny stages, through :func:`soak`). Prints one JSON
object on stdout and exits with status 1 when anything failed (``failures`` in the JSON: a run that
did not resume from the newest checkpoint, a run that crashed, a final run that failed or stopped
short, an unreadable file, a leftover temporary file):

* per stage: every kill (what it aimed at: a random moment, a checkpoint write, a best-weights /
  best-state write, a pseudo-label write; whether that write was in progress; the newest complete
  checkpoint at the kill) and whether the next run resumed from exactly that checkpoint; the final
  step of the last (uninterrupted) run against the stage's length;
* every file left in the workdirs opened with the reader of its type (JSON, NIfTI, HDF5 weights,
  TensorFlow checkpoints with every tensor read, TensorBoard event files through TensorBoard's
  loader); unreadable files and leftover temporary files are listed.

Usage (synthetic data is generated into ``--out_dir`` unless ``--data_dir`` is given):

    python -m bench.kill_soak --out_dir /tmp/soak [--kills 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASELINE_FLAGS = ["--n_iter=120", "--ckpt_every=5", "--val_every=20", "--batch_size=8"]
JOINT_FLAGS = ["--rounds=3", "--n_iter_per_round=30", "--ckpt_every=5", "--val_every=10", "--crf=false"]
MODES = {"baseline": ("random", "checkpoint", "best"),
         "joint": ("random", "checkpoint", "pseudo_labels", "best_state")}
TEMP_RE = re.compile(r"(^\..*\.tmp|_temp|\.tmp[0-9a-f]*$)")
POLL_S = 0.002


DELAY_S = (0.5, 10.0)  # random kill moment after the run is ready, seconds


def stage_command(stage: str, data_dir: Path, workdir: Path, baseline_dir: Path,
                  stage_flags: list[str] | None = None) -> list[str]:
    """The exact command line of a soaked stage (rerun unchanged after every kill); ``stage_flags``
    replace the stage's default flags (``BASELINE_FLAGS`` / ``JOINT_FLAGS``)."""
    cmd = [sys.executable, "train_selftrain.py", f"--stage={stage}", "--dataset=synthetic", f"--data_dir={data_dir}",
           f"--workdir={workdir}", "--no_of_tr_imgs=tr1", "--comb_tr_imgs=c1", "--jit_compile=false"]
    if stage == "baseline":
        return cmd + (BASELINE_FLAGS if stage_flags is None else stage_flags)
    return cmd + [f"--init_from={baseline_dir}"] + (JOINT_FLAGS if stage_flags is None else stage_flags)


def expected_steps(stage: str, stage_flags: list[str] | None = None) -> int:
    default = BASELINE_FLAGS if stage == "baseline" else JOINT_FLAGS
    flags = dict(f[2:].split("=", 1) for f in (default if stage_flags is None else stage_flags))
    return int(flags["n_iter"]) if stage == "baseline" else int(flags["rounds"]) * int(flags["n_iter_per_round"])


def latest_checkpoint_step(workdir: Path) -> int | None:
    """Step of the newest complete checkpoint named by ``W/ckpt/checkpoint`` (None if none)."""
    index = workdir / "ckpt" / "checkpoint"
    if not index.is_file():
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index.read_text(), re.M)
    return int(m.group(1)) if m else None


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def write_in_progress(mode: str, workdir: Path) -> bool:
    """Whether a write of the kind ``mode`` aims at is happening now (temporary files exist)."""
    if mode == "checkpoint":
        return any(TEMP_RE.search(n) for n in _names(workdir / "ckpt"))
    if mode in ("best", "best_state"):  # the best weights, then the training state saved with them
        return any(TEMP_RE.search(n) for n in _names(workdir / "best_state") + _names(workdir / "best"))
    if mode == "pseudo_labels":
        root = workdir / "pseudo_labels"
        return any(r.startswith("round_") and r != "round_0" and "manifest.json" not in _names(root / r)
                   and _names(root / r) for r in _names(root))
    return False


def run_and_kill(cmd: list[str], workdir: Path, mode: str, rng: random.Random, log: Path,
                 fallback_s: float, delay_s: tuple[float, float] = DELAY_S) -> dict[str, Any]:
    """Start ``cmd`` and SIGKILL it (with its process group) at a random moment or during a write.

    A kill waits until the run is *ready*: it has printed that it resumes, or (first run of the
    stage) its first complete checkpoint exists, so that there is something to resume from.
    ``random``: then a uniform 0.5-10 s more (startup, tracing, steps, validations, writes all get
    hit; ``delay_s`` is the range). Other modes: the first moment a ``mode`` write is in progress
    (polled every 2 ms), or a random moment if none came within ``fallback_s`` after ready.
    """
    t0 = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    delay = rng.uniform(*delay_s)
    resumes = latest_checkpoint_step(workdir) is not None  # this run must say that it resumes
    seen, t_ready, reason = False, None, "random"
    try:
        while proc.poll() is None:
            now = time.time()
            if t_ready is None:
                if ("resuming from step" in log.read_text(errors="replace") if resumes
                        else latest_checkpoint_step(workdir) is not None):
                    t_ready = now
            elif mode == "random" and now - t_ready >= delay:
                break
            elif mode != "random":
                if write_in_progress(mode, workdir):
                    seen, reason = True, mode
                    break
                if now - t_ready >= fallback_s + delay:
                    break
            time.sleep(POLL_S if t_ready is not None and mode != "random" else 0.05)
        finished = proc.poll() is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {"mode": mode, "killed_at": reason if not finished else None, "after_s": round(time.time() - t0, 2),
            "after_ready_s": None if t_ready is None else round(time.time() - t_ready, 2),
            "write_in_progress": seen, "finished_before_kill": finished, "returncode": proc.returncode,
            "latest_checkpoint_at_kill": latest_checkpoint_step(workdir)}


def soak_stage(stage: str, data_dir: Path, workdir: Path, baseline_dir: Path, kills: int, rng: random.Random,
               logs: Path, fallback_s: float, stage_flags: list[str] | None = None,
               delay_s: tuple[float, float] = DELAY_S) -> dict[str, Any]:
    """Kill ``stage`` ``kills`` times, rerunning the same command, then let it finish."""
    cmd = stage_command(stage, data_dir, workdir, baseline_dir, stage_flags)
    events: list[dict[str, Any]] = []
    modes = MODES[stage]
    for k in range(kills):
        log = logs / f"{stage}_{k:02d}.log"
        ev = run_and_kill(cmd, workdir, modes[k % len(modes)], rng, log, fallback_s, delay_s)
        text = log.read_text(errors="replace")
        m = re.search(r"resuming from step (\d+)", text)
        ev["started_from"] = int(m.group(1)) if m else 0
        events.append(ev)
        print(f"[soak] {stage} kill {k + 1}/{kills}: {ev}", file=sys.stderr, flush=True)
        if ev["finished_before_kill"]:
            break
    log = logs / f"{stage}_final.log"
    t0 = time.time()
    with open(log, "ab") as out:
        final = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=3600,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    text = log.read_text(errors="replace")
    m = re.search(r"resuming from step (\d+)", text)
    starts = [e["started_from"] for e in events[1:]] + [int(m.group(1)) if m else 0]
    for ev, start in zip(events, starts):  # did the run after each kill resume from its newest checkpoint?
        ev["next_run_resumed_from"] = start
        ev["resumed"] = (not ev["finished_before_kill"] and ev["latest_checkpoint_at_kill"] is not None
                         and start == ev["latest_checkpoint_at_kill"])
    summary = json.loads((workdir / "summary.json").read_text()) if (workdir / "summary.json").is_file() else {}
    return {"command": " ".join(cmd[1:]), "kills": events,
            "killed": sum(not e["finished_before_kill"] for e in events),
            "resumed": sum(e["resumed"] for e in events),
            "writes_hit": {m: sum(e["write_in_progress"] for e in events if e["mode"] == m) for m in modes if m != "random"},
            "final_returncode": final.returncode, "final_run_seconds": round(time.time() - t0, 1),
            "final_step": None if summary.get("step") is None else int(summary["step"]),
            "expected_step": expected_steps(stage, stage_flags),
            "final_log_tail": text[-600:] if final.returncode else None}


def failures(result: dict[str, Any]) -> list[str]:
    """What went wrong in a soak result (empty: the soak passed), one line each."""
    out = []
    for stage, res in result["stages"].items():
        for k, ev in enumerate(res["kills"]):
            if ev["finished_before_kill"]:
                if ev["returncode"] != 0:
                    out.append(f"{stage} run {k + 1}: exited with status {ev['returncode']} before its kill")
            elif not ev["resumed"]:
                out.append(f"{stage} run {k + 1}: killed with checkpoint {ev['latest_checkpoint_at_kill']}, the next "
                           f"run resumed from step {ev['next_run_resumed_from']}")
        if res["final_returncode"] != 0:
            out.append(f"{stage} final run: exit status {res['final_returncode']}")
        if res["final_step"] != res["expected_step"]:
            out.append(f"{stage} final run: step {res['final_step']}, expected {res['expected_step']}")
    files = result.get("files", {})
    out += [f"unreadable: {u['file']} ({u['error']})" for u in files.get("unreadable", [])]
    out += [f"leftover temporary file: {f}" for f in files.get("leftover_temp_files", [])]
    return out


def soak(out: Path, data_dir: Path, kills: int, seed: int = 0, fallback_s: float = 60.0,
         baseline_flags: list[str] | None = None, joint_flags: list[str] | None = None,
         delay_s: tuple[float, float] = DELAY_S) -> dict[str, Any]:
    """Soak a baseline stage, then a joint stage from it, in ``out`` (``kills`` per stage); returns the
    result with its ``failures`` (:func:`failures`). ``*_flags`` replace the stages' default flags."""
    t0 = time.time()
    out = Path(out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    w_base, w_joint = out / "baseline", out / "joint"
    for wd in (w_base, w_joint):
        if wd.exists():
            raise SystemExit(f"--out_dir: {wd} exists; use a new --out_dir")
    result: dict[str, Any] = {"kills_per_stage": kills, "seed": seed, "stages": {}}
    result["stages"]["baseline"] = soak_stage("baseline", data_dir, w_base, w_base, kills, rng, logs, fallback_s,
                                              baseline_flags, delay_s)
    result["stages"]["joint"] = soak_stage("joint", data_dir, w_joint, w_base, kills, rng, logs, fallback_s,
                                           joint_flags, delay_s)
    result["files"] = check_files([w_base, w_joint])
    result["failures"] = failures(result)
    result["seconds"] = round(time.time() - t0, 1)
    return result


# ---------------------------------------------------------------------------------- file checks


def _read_checkpoint(prefix: str) -> None:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def _read_events(path: Path) -> int:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(1 for _ in EventFileLoader(str(path)).Load())


def _read_h5(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


def check_files(roots: list[Path]) -> dict[str, Any]:
    """Open every file under ``roots`` with the reader of its type."""
    import nibabel as nib
    import tensorflow as tf

    checked, unreadable, leftovers, unchecked = 0, [], [], []
    ckpt_dirs = set()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.name
            try:
                if any(TEMP_RE.search(part) for part in path.relative_to(root).parts):
                    leftovers.append(str(path))
                    continue
                if name.endswith(".json"):
                    json.loads(path.read_text())
                elif name.endswith((".nii.gz", ".nii")):
                    nib.load(str(path)).get_fdata()
                elif name.endswith(".h5"):
                    _read_h5(path)
                elif name.startswith("events.out.tfevents"):
                    _read_events(path)
                elif name == "checkpoint":
                    ckpt_dirs.add(path.parent)
                    state = tf.train.get_checkpoint_state(str(path.parent))
                    if state is None:
                        raise ValueError("checkpoint index unreadable")
                    for prefix in state.all_model_checkpoint_paths:
                        full = prefix if os.path.isabs(prefix) else str(path.parent / prefix)
                        _read_checkpoint(full)
                elif name.endswith(".index") or ".data-" in name:
                    prefix = str(path).split(".index")[0] if name.endswith(".index") else str(path).split(".data-")[0]
                    _read_checkpoint(prefix)
                else:
                    unchecked.append(str(path))
                    continue
                checked += 1
            except Exception as exc:  # noqa: BLE001  (any failure is the finding)
                unreadable.append({"file": str(path), "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return {"checked": checked, "unreadable": unreadable, "leftover_temp_files": leftovers,
            "unchecked": unchecked, "checkpoint_dirs": len(ckpt_dirs)}


def make_data(out: Path) -> Path:
    """A preprocessed synthetic dataset (40 patients, 64 x 64) under ``out``."""
    from data.preprocess import preprocess_dataset
    from data.synthetic import generate

    if not (out / "pre" / "dataset.json").is_file():
        generate(out / "raw", 40, seed=0)
        preprocess_dataset("synthetic", out / "raw", out / "pre")
    return out / "pre"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", required=True, help="workdirs, logs and (unless --data_dir) the data")
    ap.add_argument("--data_dir", help="preprocessed synthetic data (default: generated into --out_dir)")
    ap.add_argument("--kills", type=int, default=10, help="kills per stage")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--fallback_s", type=float, default=60.0,
                    help="seconds to wait for a targeted write before killing at a random moment instead")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    data_dir = Path(args.data_dir).resolve() if args.data_dir else make_data(out / "data")
    result = soak(out, data_dir, args.kills, args.seed, args.fallback_s)
    print(json.dumps(result, indent=2))
    for line in result["failures"]:
        print(f"error: {line}", file=sys.stderr)
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
