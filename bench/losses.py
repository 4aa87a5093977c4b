"""Benchmark of the contrastive losses; prints one JSON object on stdout.

Measures (median wall time over repeats, after a warm-up call that traces/compiles):

* the vectorized pseudo-label local contrastive loss (MedIA 2023) against the float64 loop reference
  of the test suite, at the original sizes (B = 10 pairs, 192x192 embeddings of 16 channels, C = 4,
  P = 3): forward in eager, ``tf.function`` and XLA mode, forward + backward in the same three modes,
  and the host anchor sampler;
* each contrastive loss's forward + backward time (graph and XLA) as a fraction of one UNet
  forward + backward on 40 images of 192x192 (the joint step's forward pass, ORIGINAL_SPEC §3.4.1);
  the target for the pseudo-label loss is at most 5 % of that step. The 2020 global and local losses
  are included when their modules are importable, otherwise reported as missing.

Usage: ``python -m bench.losses [--quick] [--repeats N]``; ``--quick`` uses tiny sizes (smoke test).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from bench.timing import median_time
from data.plc_selection import sample_anchors
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss

REPO = Path(__file__).resolve().parents[1]


def _load_reference() -> Callable:
    """The loop reference lives in the test file (one independent implementation, not two)."""
    path = REPO / "tests" / "test_pseudo_label_contrastive.py"
    spec = importlib.util.spec_from_file_location("_plc_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_plc_loss


def _disk_labels(rng: np.random.Generator, n: int, size: int, num_classes: int) -> np.ndarray:
    """(n, size, size) label maps of nested discs so that every class is present in every image."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), np.int32)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, size=2) * size
        dist = np.hypot(yy - cy, xx - cx)
        for c in range(1, num_classes):
            labels[i][dist < size * (0.35 - 0.3 * (c - 1) / max(num_classes - 1, 1))] = c
    return labels


def bench_pseudo_label(num_pairs: int, size: int, channels: int, num_classes: int, num_samples: int,
                       repeats: int) -> dict:
    """Time the PLC loss (inter-image variant, the default) against the loop reference."""
    rng = np.random.default_rng(0)
    n2 = 2 * num_pairs
    labels_int = _disk_labels(rng, n2, size, num_classes)
    emb = rng.normal(size=(n2, size, size, channels)).astype(np.float32)
    onehot = np.eye(num_classes, dtype=np.float32)[labels_int]
    sampler_s = median_time(lambda: sample_anchors(labels_int, num_classes, num_samples, rng), repeats, warmup=0)
    yx, valid = sample_anchors(labels_int, num_classes, num_samples, rng)
    args = [tf.constant(t) for t in (emb, onehot, yx, valid)]

    def forward(x, y, a, v):
        return pseudo_label_local_contrastive_loss(x, y, a, v)

    def forward_backward(x, y, a, v):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = pseudo_label_local_contrastive_loss(x, y, a, v)
        return loss, tape.gradient(loss, x)

    graph_f, xla_f = tf.function(forward), tf.function(forward, jit_compile=True)
    graph_fb, xla_fb = tf.function(forward_backward), tf.function(forward_backward, jit_compile=True)

    reference = _load_reference()
    start = time.perf_counter()
    want, _ = reference(emb, onehot, yx, valid, 0.1, True)
    reference_s = time.perf_counter() - start
    got = float(forward(*args))
    got_xla = float(xla_f(*args))
    report = {
        "sizes": {"pairs": num_pairs, "image": [size, size], "channels": channels, "classes": num_classes,
                  "samples_per_class": num_samples, "inter_image": True},
        "loss": got,
        "max_abs_diff_vs_reference": max(abs(got - want), abs(got_xla - want)),
        "sample_anchors_s": sampler_s,
        "forward": {
            "reference_loop_s": reference_s,
            "eager_s": median_time(lambda: forward(*args), repeats),
            "graph_s": median_time(lambda: graph_f(*args), repeats),
            "xla_s": median_time(lambda: xla_f(*args), repeats),
        },
        "forward_backward": {
            "eager_s": median_time(lambda: forward_backward(*args), repeats),
            "graph_s": median_time(lambda: graph_fb(*args), repeats),
            "xla_s": median_time(lambda: xla_fb(*args), repeats),
        },
    }
    report["forward"]["speedup_graph_vs_reference"] = reference_s / report["forward"]["graph_s"]
    return report


def bench_unet(images: int, size: int, num_classes: int, repeats: int) -> dict:
    """One UNet forward + backward (gradients of a cross-entropy, no optimizer update), graph mode."""
    try:
        from models.unet import build_unet
    except ImportError as exc:
        return {"missing": f"models.unet.build_unet not importable: {exc}"}
    model = build_unet(num_classes, image_size=(size, size))
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(images, size, size, 1)).astype(np.float32))
    y = tf.one_hot(rng.integers(0, num_classes, size=(images, size, size)), num_classes)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, model.trainable_variables)

    return {"images": images, "image": [size, size], "forward_backward_s": median_time(lambda: step(x, y), repeats)}


def _fb_closure(loss_fn: Callable[[tf.Tensor], tf.Tensor], x: np.ndarray, jit: bool) -> Callable[[], Any]:
    def fb(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = loss_fn(t)
        return loss, tape.gradient(loss, t)

    compiled = tf.function(fb, jit_compile=jit)
    t = tf.constant(x)
    return lambda: compiled(t)


def _global_cases(rng: np.random.Generator) -> list:
    """G^R, G^D- and G^D at the README sizes (bt_size 12, 4 partitions, z of 128)."""
    global_loss = importlib.import_module("losses.global_contrastive").global_contrastive_loss
    bt, cases = 12, []
    for exp_no, name, n in ((0, "global_GR", 2 * bt), (1, "global_GD-", 3 * bt), (2, "global_GD", 4 * bt)):
        fn = (lambda t, e=exp_no: global_loss(t, exp_no=e, bt_size=bt, n_parts=4, temperature=0.1))
        cases.append((name, fn, rng.normal(size=(n, 128)).astype(np.float32),
                      {"z": [n, 128], "exp_no": exp_no, "bt_size": bt, "n_parts": 4}))
    return cases


def _local_cases(rng: np.random.Generator, quick: bool) -> list:
    """L^R and L^D on decoder block l=3 features (48x48x64 at 192 input), 13 3x3 regions, wgt_en=1."""
    local_loss = importlib.import_module("losses.local_contrastive").local_contrastive_loss
    fsize, ch = (16, 8) if quick else (48, 64)
    # wgt_en=1 (the README configuration): shared Dense-128 on the flattened 3x3 regions.
    projection = keras.layers.Dense(128, use_bias=False, name="seg_pred")
    projection.build((None, 9 * ch))
    cases = []
    for exp_no, name, n in ((0, "local_LR", 20), (1, "local_LD", 24)):
        fn = (lambda t, e=exp_no: local_loss(t, exp_no=e, num_regions=13, region_size=1, temperature=0.1,
                                             projection=projection))
        cases.append((name, fn, rng.normal(size=(n, fsize, fsize, ch)).astype(np.float32),
                      {"features": [n, fsize, fsize, ch], "exp_no": exp_no, "num_regions": 13,
                       "region": "3x3", "projection": "Dense(128)"}))
    return cases


def bench_2020_losses(quick: bool, repeats: int, which: set[str]) -> dict:
    """Forward+backward times of the 2020 global (G^R, G^D-, G^D) and local (L^R, L^D) losses."""
    rng = np.random.default_rng(2)
    out: dict[str, Any] = {}
    cases = []
    for key, module, make in (("global", "losses.global_contrastive", lambda: _global_cases(rng)),
                              ("local", "losses.local_contrastive", lambda: _local_cases(rng, quick))):
        if key not in which:
            continue
        try:
            cases += make()
        except (ImportError, AttributeError) as exc:
            out[f"{key}_contrastive"] = {"missing": f"{module}: {exc}"}
    for name, fn, x, sizes in cases:
        entry: dict[str, Any] = {"sizes": sizes}
        try:
            entry["forward_backward_graph_s"] = median_time(_fb_closure(fn, x, False), repeats)
            entry["forward_backward_xla_s"] = median_time(_fb_closure(fn, x, True), repeats)
        except Exception as exc:  # report, do not hide: a contract mismatch shows up here
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            entry["error"] = f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the JSON report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (median)")
    parser.add_argument("--parts", default="plc,unet,global,local",
                        help="comma-separated subset of plc,unet,global,local to run")
    args = parser.parse_args(argv)
    quick = args.quick
    parts = set(args.parts.split(","))
    if not parts <= {"plc", "unet", "global", "local"} or "plc" not in parts:
        parser.error(f"--parts must include plc and name only plc,unet,global,local: {args.parts}")
    repeats = args.repeats or (2 if quick else 5)
    if quick:
        pairs, size, unet_images, unet_size = 2, 32, 4, 32
    else:
        pairs, size, unet_images, unet_size = 10, 192, 40, 192

    plc = bench_pseudo_label(pairs, size, 16, 4, 3, repeats)
    unet = bench_unet(unet_images, unet_size, 4, max(1, repeats // 2)) if "unet" in parts else {"skipped": True}
    others = bench_2020_losses(quick, repeats, parts)

    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                    "devices": [d.name for d in tf.config.list_logical_devices()]},
        "quick": quick,
        "repeats": repeats,
        "pseudo_label_contrastive": plc,
        "unet_step": unet,
        "other_losses": others,
    }
    unet_s = unet.get("forward_backward_s")
    if unet_s:
        fractions = {
            "pseudo_label_contrastive": {"graph": plc["forward_backward"]["graph_s"] / unet_s,
                                         "xla": plc["forward_backward"]["xla_s"] / unet_s}
        }
        for name, entry in others.items():
            if "forward_backward_graph_s" in entry:
                fractions[name] = {"graph": entry["forward_backward_graph_s"] / unet_s,
                                   "xla": entry["forward_backward_xla_s"] / unet_s}
        report["fraction_of_unet_step"] = fractions
        report["plc_target_fraction"] = 0.05
        plc_fractions = fractions["pseudo_label_contrastive"]
        report["plc_meets_target"] = {mode: frac <= 0.05 for mode, frac in plc_fractions.items()}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
