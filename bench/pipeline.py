"""Benchmark of the input pipelines (``data.pipeline``); prints one JSON object on stdout.

For each image size (default 192x192, the ACDC/prostate size, and 64x64), on synthetic in-memory
volumes (contents do not change the cost), measures after a warm-up of a few batches (tracing):

* throughput of every sampler in batches/s and slices/s (wall time of iterating the prefetched,
  parallel ``tf.data`` pipeline) and its CPU seconds per batch (``time.process_time``, all threads;
  less sensitive to other load on a shared machine);
* the augmentation ops alone on one labeled batch (``tf.function``, median of repeats): affine,
  deformation, crop + intensity.

The labeled sampler (20 slices, affine + deformation) is compared with the ~1.5 s a UNet training
step takes on the 2-core development CPU (DESIGN.md): ``speedup_vs_1.5s_step`` = 1.5 s / (s per batch).

Usage: ``python -m bench.pipeline [--quick] [--sizes 192,64] [--batches N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import tensorflow as tf

from bench.timing import median_time
from data import augment as A
from data import pipeline as P

STEP_SECONDS = 1.5  # UNet step, batch 20 at 192x192, 2 CPU cores (DESIGN.md)


def _volumes(size: int, n_vols: int, depth: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    imgs = [rng.random((depth, size, size), dtype=np.float32) for _ in range(n_vols)]
    labs = [rng.integers(0, 4, (depth, size, size)).astype(np.int16) for _ in range(n_vols)]
    return imgs, labs


def _throughput(ds: tf.data.Dataset, batches: int, warmup: int = 12) -> dict[str, Any]:
    """Steady-state rate: the warm-up traces the map function and drains the prefetch buffer."""
    it = iter(ds)
    for _ in range(warmup):
        first = next(it)
    rows = int(tf.nest.flatten(first)[0].shape[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        tf.nest.map_structure(np.asarray, next(it))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "rows_per_batch": rows,
        "batches_per_s": round(batches / wall, 2),
        "slices_per_s": round(batches * rows / wall, 1),
        "s_per_batch": round(wall / batches, 4),
        "cpu_s_per_batch": round(cpu / batches, 4),
    }


def bench_size(size: int, batches: int, repeats: int) -> dict[str, Any]:
    imgs, labs = _volumes(size, n_vols=10, depth=10)
    crop = A.crop_params_for_size(size, size)
    crop_kw = dict(bbox_dim=crop["bbox_dim"], bbox_dim_y=crop["bbox_dim_y"],
                   crop_offset_range=crop["offset_range"])
    samplers = {
        "labeled_affine_deform_B20": P.labeled_batches(imgs, labs, 4, 20, seed=0),
        "labeled_affine_deform_intensity_B20": P.labeled_batches(imgs, labs, 4, 20, seed=0, intensity=True),
        "labeled_affine_only_B20": P.labeled_batches(imgs, labs, 4, 20, seed=0, deform=False),
        "unlabeled_B20": P.unlabeled_slices(imgs, 20, seed=0),
        "global_exp0_GR_B12": P.global_loss_batches(imgs, 0, 12, 4, seed=0, **crop_kw),
        "global_exp1_GDminus_B12": P.global_loss_batches(imgs, 1, 12, 4, seed=0, **crop_kw),
        "global_exp2_GD_B12": P.global_loss_batches(imgs, 2, 12, 4, seed=0, **crop_kw),
        "local_exp0_LR_B10": P.local_loss_batches(imgs, 0, 10, seed=0),
        "local_exp1_LD": P.local_loss_batches(imgs, 1, seed=0),
    }
    out: dict[str, Any] = {"crop_params": crop, "samplers": {}}
    for name, ds in samplers.items():
        out["samplers"][name] = _throughput(ds, batches, warmup=12 if batches > 5 else 2)
    lab = out["samplers"]["labeled_affine_deform_B20"]
    lab["speedup_vs_1.5s_step"] = round(STEP_SECONDS / lab["s_per_batch"], 1)

    x = tf.constant(np.stack([v[0] for v in imgs] * 2)[..., None])  # (20, H, W, 1)
    y = tf.constant(np.stack([v[0] for v in labs] * 2).astype(np.int32))  # (20, H, W)
    seed = tf.constant([1, 2], tf.int64)
    affine = tf.function(lambda: A.affine_augment(x, y, seed))
    deform = tf.function(lambda: A.random_deformation(x, tf.one_hot(y, 4), seed))
    view = tf.function(lambda: A.brightness_contrast(A.crop_and_resize(x, seed, **crop), seed))
    out["ops_s_per_20_images"] = {
        "affine_augment": round(median_time(affine, repeats), 4),
        "random_deformation": round(median_time(deform, repeats), 4),
        "crop_and_resize+brightness_contrast": round(median_time(view, repeats), 4),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few batches, 64x64 only (smoke test)")
    parser.add_argument("--sizes", default="192,64")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches, repeats = (3, 2) if args.quick else (args.batches, args.repeats)
    result = {
        "benchmark": "data.pipeline",
        "tensorflow": tf.__version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_avg_1min_at_start": round(os.getloadavg()[0], 2)},
        "batches_timed": batches,
        "target": f"labeled batch of 20 at 192x192 in well under {STEP_SECONDS} s (>= 3x faster than a step)",
        "sizes": {f"{s}x{s}": bench_size(s, batches, repeats) for s in sizes},
    }
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
