"""GPU readiness in one short run; prints one JSON object (``scripts/gpu_smoke.sh``).

On the GPU (the default; refused when TensorFlow sees none):

1. XLA whole-step (``jit_compile=True``) baseline (20 images) and PLC joint (40 images) steps at
   192x192 in fp32 and mixed_bfloat16 (:func:`bench.precision.bench_precision`), median seconds;
2. a mini pipeline on the synthetic dataset (baseline -> pseudo-labels -> PLC joint, a few
   iterations each, ``--jit_compile=true``) and one test evaluation, in this process;
3. the JSON: ``device``, ``runs`` = ``{precision: {"step_s": {"supervised": s, "joint": s}, ...}}``
   (what ``python -m training.reproduction --dry_run --step_times`` reads), ``pipeline``
   (seconds, test Dice of the mini PLC model).

``--cpu`` runs the same on the CPU at 32x32 (timing) with one timed step, fp32 only and without XLA: the test
suite's check that the script works on a machine without a GPU (its numbers are no GPU numbers).
XLA is left out there because the XLA whole joint step is pathologically slow on the CPU (measured on
an Intel Xeon with AMX, 2 cores, 32x32: 89 s for the first call, 38 s for the second, against 0.4 s
for the XLA baseline step), which is why ``--jit_compile=auto`` is off on CPUs.

Usage: ``python -m bench.gpu_smoke [--cpu] [--out FILE] [--steps N] [--workdir DIR] [--data_dir P]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from bench import precision as bench_prec
from bench.training import C, joint_unit
from common.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "mixed_bfloat16")
MINI = {"baseline_iters": 6, "joint_rounds": 1, "joint_iters_per_round": 4, "val_every": 3, "ckpt_every": 3}


def step_times(size: int, steps: int, on_gpu: bool) -> dict[str, Any]:
    """Whole-step times per precision (XLA on the GPU), as ``{precision: {"step_s": {...}, ...}}``."""
    unit = joint_unit(np.random.default_rng(0), size)
    precisions = PRECISIONS if on_gpu else PRECISIONS[:1]  # --cpu: fp32 (bf16 on the CPU: tests/test_precision.py)
    raw = bench_prec.bench_precision(size, steps, on_gpu, precisions, unit, C, on_gpu)
    return {p: {"step_s": {"supervised": r["baseline_step_s"], "joint": r["joint_step_s"]}, **r}
            for p, r in raw.items()}


def mini_pipeline(work: Path, jit: bool, data_dir: str | None = None) -> dict[str, Any]:
    """Synthetic data (or ``data_dir``, preprocessed synthetic data), baseline -> pseudo-labels ->
    joint (PLC, release) and its test evaluation."""
    from training import pipeline

    py = sys.executable
    raw, prep = work / "raw", Path(data_dir) if data_dir else work / "prep"
    if not data_dir:
        for cmd in ([py, "-m", "data.synthetic", "--out_dir", str(raw), "--num_patients", "40", "--seed", "0"],
                    [py, "-m", "data.preprocess", "--dataset", "synthetic", "--raw_dir", str(raw),
                     "--out_dir", str(prep)]):
            subprocess.run(cmd, cwd=str(ROOT), check=True, stdout=subprocess.DEVNULL)
    opts = pipeline.make_options("demo", MINI, dataset="synthetic", data_dir=str(prep), out_dir=str(work / "runs"),
                                 no_of_tr_imgs="tr1", comb_tr_imgs="c1", methods=("plc",), seed=0,
                                 extra=(f"--jit_compile={'true' if jit else 'auto'}",), in_process=True)
    t0 = time.time()
    results = pipeline.run_pipeline(opts)
    return {"seconds": time.time() - t0, "iterations": MINI, "test_dice_plc": results["plc"]["overall"]["dice"]["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU, tiny sizes (the test suite)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on GPU, 1 with --cpu)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--workdir", default=None, help="folder of the mini pipeline (default: a temp dir)")
    parser.add_argument("--data_dir", default=None, help="preprocessed synthetic data to use (default: made anew)")
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    if not args.cpu and not gpus:
        print("error: no GPU visible to TensorFlow (install tensorflow[and-cuda]==2.21.0); --cpu runs it on the CPU",
              file=sys.stderr)
        sys.exit(2)
    size = 32 if args.cpu else 192
    steps = args.steps or (1 if args.cpu else 10)
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus and not args.cpu else {}
    result: dict[str, Any] = {
        "device": (f"GPU ({details.get('device_name', 'unknown')})" if gpus and not args.cpu
                   else f"CPU ({os.cpu_count()} cores; --cpu smoke run, not GPU numbers)"),
        "source": f"python -m bench.gpu_smoke{' --cpu' if args.cpu else ''}", "size": f"{size}x{size}",
        "jit_compile": not args.cpu, "timed_steps": steps, "tensorflow": tf.__version__}
    device = "/CPU:0" if args.cpu else "/GPU:0"
    with tf.device(device):
        result["runs"] = step_times(size, steps, on_gpu=not args.cpu)
        with tempfile.TemporaryDirectory() as tmp:
            result["pipeline"] = mini_pipeline(Path(args.workdir or tmp), jit=not args.cpu, data_dir=args.data_dir)
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
