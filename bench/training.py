"""Benchmark of the training engine; prints one JSON object on stdout.

Measures, with the real step builders of ``training.engine.steps`` (median seconds per step after a
warm-up that traces the step):

* the baseline step (20 images) and the PLC joint step (one 40-image forward: 20 labeled + 20
  contrastive) in images/s, at the original size (192x192, C = 4) and at the demo size (64x64);
* the joint step relative to a segmentation-only step with the same 40-image forward
  (``joint_compute(contrastive=False)``); target <= 1.10;
* the input pipelines (``data.pipeline.labeled_batches`` and the joint host sampler
  ``data.joint_sampler``) in batches/s, relative to the rate at which the step consumes them;
  target >= 3x;
* pseudo-label generation (``pseudolabels.generate.generate_pseudo_labels``) in slices/s, with and
  without the dense CRF, on synthetic-size volumes;
* ``--precision`` fp32 / mixed_bfloat16 / mixed_float16: baseline (20 images) and joint (40 images)
  step times at 192x192 and a convolution micro-benchmark per dtype (:mod:`bench.precision`),
  beside the CPU model and its bf16 / AMX flags (:mod:`bench.cpu_info`);
* ``breakdown``: where the baseline step spends its time (:mod:`bench.step_breakdown`): forward,
  + loss, + gradients, + Adam (hand-written step), the project's full step and the full step without
  the BN-statistics guard, timed interleaved on one batch of 20 images at 192x192 and 64x64, with the
  backward / optimizer / guard + distribution / BN-guard shares of the full step and the thread
  settings in effect;
* ``ops`` (only on request, ``--sections ...,ops``; a few minutes): per-op times of ours and the
  PyTorch peer on the UNet's layer shapes at 192x192, batches 20 and 40 (convolution forward /
  backward-input / backward-filter, BN, element-wise ops, conv blocks, whole steps), with oneDNN on
  and off, explicit thread pools, NCHW and XLA variants, interleaved in worker processes, and the
  oneDNN kernels each side runs (:mod:`bench.ops`; ratios need ``--peer_python``).

Every JSON names the machine kind it ran on (``"machine_kind"``, one of ``bench.cpu_info.KINDS``,
from the vendor and the ISA flags; ``"cpu"`` adds the ISA level, the cache sizes and any
``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` cap, which makes a run an emulation of a smaller
ISA, never the other kind), and says so on standard error first. Every run also measures the fp32
matmul peak of the default device (``"matmul"``, :mod:`bench.matmul`; the yardstick of the machine
kind) and, when the 64x64 steps ran, projects the wall time of ``make demo`` (``"demo_projection"``,
:mod:`bench.demo_projection`). With ``--peer_python`` and the ``steps`` section the PyTorch peer
(``shared/bench/peer_torch.py``, run with that interpreter before the TensorFlow sections, in the
same environment) is timed too: its records under ``"peer"``, our images/s over its images/s under
``"ours_vs_peer"`` (:mod:`bench.peer`), a failure of it under ``"peer_error"``.

Usage: ``python -m bench.training [--quick] [--steps N] [--sections steps,input,...] [--fp16_on_cpu]
[--peer_python PATH [--peer_script PATH] [--peer_timeout_s S]] [--ops_rounds N] [--ops_reps N] [--ops_step_rounds N]
[--demo_overhead_s S]``;
``--quick`` = demo size only, few steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow as tf

from bench import peer as bench_peer
from bench import precision as bench_prec
from bench.cpu_info import cpu_info
from bench.demo_projection import DEMO_OVERHEAD_S, project_demo_seconds
from bench.matmul import matmul_peak_gflops
from bench.ops import bench_ops
from bench.step_fixtures import C, joint_unit, labeled_batch, make_baseline_step, make_joint_step  # noqa: F401
from bench.step_breakdown import breakdown
from bench.timing import median_time
from data import pipeline
from models.heads import build_h
from models.unet import build_unet
from data import joint_sampler as joint_data
from models.precision import PRECISIONS, check_precision
from training.engine.strategy import resolve_jit
from training.pipeline import PRESETS

SECTIONS = ("steps", "input", "pseudo_labels", "precision", "breakdown", "ops")
DEFAULT_SECTIONS = ("steps", "input", "pseudo_labels", "precision", "breakdown")  # "ops" on request


def _volumes(rng: np.random.Generator, size: int, n: int = 4, depth: int = 10):
    """Volumes with every class in every slice (the joint sampler then never skips)."""
    images, labels = [], []
    for _ in range(n):
        lab = np.zeros((depth, size, size), np.int32)
        q = size // 8
        lab[:, 2 * q:4 * q, 2 * q:4 * q] = 1
        lab[:, 4 * q:6 * q, 2 * q:4 * q] = 2
        lab[:, 3 * q:5 * q, 4 * q:6 * q] = 3
        images.append((rng.random((depth, size, size)) * 0.2 + lab * 0.2).astype(np.float32))
        labels.append(lab)
    return images, labels


def bench_steps(size: int, n: int, jit: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    unet, h = build_unet(C, (size, size)), build_h()
    out: dict[str, Any] = {}

    base = make_baseline_step(unet, jit)
    x, y = labeled_batch(rng, 20, size)
    t = median_time(lambda: float(base((x, y))[0]), n, warmup=2)
    out["baseline_step_s"] = t
    out["baseline_images_per_s"] = 20 / t

    unit = joint_unit(rng, size)
    joint = make_joint_step(unet, h, jit)
    seg_only = make_joint_step(unet, h, jit, contrastive=False)
    # Interleave the two so that machine-load drift affects both alike.
    tj, ts = [], []
    for _ in range(2):
        joint(unit), seg_only(unit)
    for _ in range(n):
        t0 = time.perf_counter()
        float(joint(unit)[0])
        tj.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        float(seg_only(unit)[0])
        ts.append(time.perf_counter() - t0)
    out["joint_step_s"] = statistics.median(tj)
    out["joint_images_per_s"] = 40 / out["joint_step_s"]
    out["seg_only_40_step_s"] = statistics.median(ts)
    out["joint_over_seg_only"] = out["joint_step_s"] / out["seg_only_40_step_s"]
    return out


def bench_input(size: int, n: int, baseline_step_s: float, joint_step_s: float) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    images, labels = _volumes(rng, size)
    ds = iter(pipeline.labeled_batches(images, labels, C, batch_size=20, seed=0))
    t = median_time(lambda: next(ds), n, warmup=3)
    out = {"labeled_batches_per_s": 1 / t, "labeled_pipeline_over_consumption": baseline_step_s / t}
    sampler = joint_data.JointSampler(images, labels, images, labels, C, 3, seed=0)
    jds = iter(joint_data.joint_dataset(sampler))
    t = median_time(lambda: next(jds), n, warmup=3)
    out.update({"joint_units_per_s": 1 / t, "joint_pipeline_over_consumption": joint_step_s / t})
    t = median_time(sampler.sample, n, warmup=1)
    out["joint_host_sampling_s"] = t
    return out


def bench_pseudo_labels(size: int, n_vols: int) -> dict[str, Any]:
    from configs import get_config
    from data.store import Volume
    from evaluation.inference import keras_predictor, predict_volume
    from pseudolabels.generate import generate_pseudo_labels

    cfg = get_config("synthetic")
    rng = np.random.default_rng(2)
    images, _ = _volumes(rng, size, n=n_vols)
    meta = {"image_size": [size, size], "target_resolution": list(cfg.target_resolution)}
    vols = [Volume(id=f"{i:03d}", image=img, label=None, meta=meta) for i, img in enumerate(images)]
    predictor = keras_predictor(build_unet(C, (None, None)))

    def predict_fn(x):
        return predict_volume(predictor, x[..., 0])

    predict_fn(images[0][..., None])  # trace
    out = {}
    for crf in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate_pseudo_labels(predict_fn, vols, cfg, tmp, crf=crf, progress=False)
            dt = time.perf_counter() - t0
        out[f"pseudo_label_slices_per_s_{'crf' if crf else 'no_crf'}"] = sum(v.image.shape[0] for v in vols) / dt
    out["pseudo_label_size"] = size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo size only, few steps (smoke test)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--jit_compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated parts to run, of {','.join(SECTIONS)} (default: all but ops)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="precisions of the precision section")
    parser.add_argument("--precision_steps", type=int, default=None,
                        help="timed steps per precision (default: --steps)")
    parser.add_argument("--fp16_on_cpu", action="store_true",
                        help="time mixed_float16 training steps on a CPU too (very slow, see bench.precision)")
    parser.add_argument("--peer_python", default=None,
                        help="Python of a venv with torch: run the PyTorch peer with it first and compare")
    parser.add_argument("--peer_script", default=str(bench_peer.DEFAULT_PEER_SCRIPT),
                        help="the peer script (default: shared/bench/peer_torch.py beside the repository)")
    parser.add_argument("--peer_timeout_s", type=float, default=1800.0, help="time limit of the peer run")
    parser.add_argument("--ops_rounds", type=int, default=3, help="interleaved rounds per op group (ops section)")
    parser.add_argument("--ops_reps", type=int, default=1, help="calls per op, worker and round (ops section)")
    parser.add_argument("--ops_step_rounds", type=int, default=4, help="interleaved rounds per step (ops section)")
    parser.add_argument("--demo_overhead_s", type=float, default=DEMO_OVERHEAD_S,
                        help="non-step seconds of `make demo` added to the demo projection "
                             "(default: measured on an AMD EPYC with AVX-512; see bench.demo_projection)")
    args = parser.parse_args()
    if args.peer_python is not None:
        if not os.path.isfile(args.peer_python):
            parser.error(f"--peer_python: {args.peer_python} does not exist")
        if not os.path.isfile(args.peer_script):
            parser.error(f"--peer_script: {args.peer_script} does not exist")
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    jit = resolve_jit(args.jit_compile)
    sizes = [64] if args.quick else [192, 64]
    n = 2 if args.quick else args.steps
    gpus = tf.config.list_physical_devices("GPU")
    cpu = cpu_info()
    print(f"bench.training: running on the {cpu['kind']} kind ({cpu['model']}, ISA {cpu['isa']}, "
          f"{cpu['usable_cpus']} usable CPUs, caches " + ", ".join(f"{k} {v['bytes'] // 1024} KiB"
                                                                   for k, v in cpu["caches"].items())
          + (f"; ISA capped by {cpu['isa_limits']}: an emulation, not that kind" if cpu["isa_limits"] else "")
          + ")", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "device": _gpu_name(gpus[0]) if gpus else f"CPU ({os.cpu_count()} cores)", "machine_kind": cpu["kind"],
        "cpu": cpu,
        "platform": platform.platform(), "tensorflow": tf.__version__, "jit_compile": jit,
        "targets": {"joint_over_seg_only": "<= 1.10", "pipeline_over_consumption": ">= 3"}}
    if args.peer_python is not None and "steps" in sections:  # first: the peer and TF never compete for the CPU
        result["peer"], error = bench_peer.run_peer(args.peer_python, args.peer_script, args.peer_timeout_s)
        if error:
            result["peer_error"] = error
    result["matmul"] = matmul_peak_gflops()
    for size in sizes if {"steps", "input"} & set(sections) else []:
        r = bench_steps(size, n if size > 64 else max(n, 2 * n), jit)
        if "input" in sections:
            r.update(bench_input(size, max(n, 5), r["baseline_step_s"], r["joint_step_s"]))
        result[f"{size}x{size}"] = r
    if "64x64" in result:
        result["demo_projection"] = {
            "preset": "demo", "step_times": "64x64",
            **project_demo_seconds(result["64x64"], PRESETS["demo"], args.demo_overhead_s, joint_runs=2)}
    if "peer" in result:
        result["ours_vs_peer"] = bench_peer.ours_vs_peer(result, result["peer"])
        result["ours_vs_peer_basis"] = {k: bench_peer.RATIO_BASIS[k] for k in result["ours_vs_peer"]}
    if "pseudo_labels" in sections:
        result.update(bench_pseudo_labels(64, 2 if args.quick else 6))
    if "precision" in sections:
        result["precision"] = _precision_section(args, jit, bool(gpus), 64 if args.quick else 192,
                                                 args.precision_steps or n)
    if "breakdown" in sections:
        sizes_n = [(64, max(n, 5))] if args.quick else [(192, n), (64, max(n, 5))]
        result["breakdown"] = {f"{s}x{s}": breakdown(s, k, jit_compile=jit) for s, k in sizes_n}
    if "ops" in sections:
        result["ops"] = bench_ops(args.peer_python, args.peer_script if args.peer_python else None, args.quick,
                                  args.ops_rounds, args.ops_reps, args.ops_step_rounds,
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))


def _gpu_name(gpu: Any) -> str:
    name = tf.config.experimental.get_device_details(gpu).get("device_name")
    return f"GPU ({name})" if name else "GPU"


def _precision_section(args: argparse.Namespace, jit: bool, on_gpu: bool, size: int, n: int) -> dict[str, Any]:
    """Step times per precision at ``size`` (20 and 40 images) and the convolution micro-benchmark."""
    precisions = [check_precision(p) for p in args.precisions.split(",") if p]
    unit = joint_unit(np.random.default_rng(3), size)
    return {"size": f"{size}x{size}", "baseline_images": 20, "joint_images": 40, "timed_steps": n,
            "steps": bench_prec.bench_precision(size, n, jit, precisions, unit, C, on_gpu, args.fp16_on_cpu),
            "conv3x3_fwd_bwd_s": {"shape": list(bench_prec.CONV_SHAPE), **bench_prec.bench_conv(precisions)}}


if __name__ == "__main__":
    main()
