"""Benchmark of pseudo-label generation; prints one JSON object on stdout.

Measures slices per second (wall time, after a warm-up) of:

* the labelling step alone, with a smooth random softmax map standing in for the network so that
  the CRF cost is isolated: plain argmax, and the dense CRF (``pseudolabels.crf``, the dataset's
  parameters, 30 mean-field iterations) inline (1 worker) and with a process pool of N workers;
* the whole ``generate_pseudo_labels`` (fake network, CRF on, NIfTI + manifest written) and the
  TTA agreement filter's own cost (two augmentations, inverse transforms, F1);
* the CRF's CPU time per slice (independent of other load on a shared machine);
* the CRF's effect on label quality on the synthetic dataset (simulated network outputs);
* optionally (``--unet``) the UNet forward in inference mode in chunks of 20 slices, which is the
  network part of pseudo-labelling.

At the original size (192x192, C = 4, ACDC parameters) and the demo size (64x64, C = 4, synthetic
parameters). Usage: ``python -m bench.pseudo_labels [--quick] [--no-unet] [--no-quality] [--workers 1,2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import configs  # noqa: E402
from pseudolabels import crf as crf_lib  # noqa: E402
from pseudolabels import generate as pl  # noqa: E402
from pseudolabels import tta as tta_lib  # noqa: E402


class _Volume:
    def __init__(self, vid: str, image: np.ndarray) -> None:
        self.id, self.image, self.label, self.meta = vid, image, None, {}


class _Config:
    def __init__(self, num_classes: int, crf_params: tuple, resolution: tuple) -> None:
        self.num_classes, self.crf_params, self.target_resolution = num_classes, crf_params, resolution


def _smooth_inputs(depth: int, size: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random softmax (D, H, W, C) and a smooth image (D, H, W) in [0, 1]."""
    rng = np.random.default_rng(seed)
    sigma = (0, size / 24, size / 24, 0)
    logits = ndimage.gaussian_filter(rng.normal(size=(depth, size, size, num_classes)), sigma) * size / 4
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True)).astype(np.float32)  # (D, H, W, C)
    image = ndimage.gaussian_filter(rng.random((depth, size, size)), (0, 2, 2)).astype(np.float32)  # (D, H, W)
    return probs, image


def _rate(fn: Callable[[], Any], slices: int, repeats: int) -> float:
    """Slices per second: best of ``repeats`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return slices / best


def _bench_size(size: int, depth: int, num_classes: int, params: tuple, workers: list[int], repeats: int) -> dict:
    probs, image = _smooth_inputs(depth, size, num_classes)
    out: dict[str, Any] = {"size": [size, size], "num_classes": num_classes, "slices": depth,
                           "crf_params": list(params)}
    out["argmax_slices_per_s"] = _rate(lambda: np.argmax(probs, -1).astype(np.int16), depth, repeats)
    cpu0 = time.process_time()
    reference = crf_lib.crf_volume(probs, image, params, workers=1)
    cpu_per_slice = (time.process_time() - cpu0) / depth
    # CPU seconds do not depend on other processes sharing the cores: N idle cores would give
    # about N / cpu_s_per_slice slices/s with N workers.
    out["crf_cpu_ms_per_slice"] = 1000.0 * cpu_per_slice
    out["crf_changed_fraction"] = float((reference != probs.argmax(-1)).mean())
    for n in workers:
        if n == 1:
            rate = _rate(lambda: crf_lib.crf_volume(probs, image, params, workers=1), depth, repeats)
        else:
            with crf_lib.make_executor(n) as pool:
                got = crf_lib.crf_volume(probs, image, params, executor=pool, blocks=n)
                assert np.array_equal(got, reference), "pooled CRF differs from inline CRF"
                rate = _rate(lambda: crf_lib.crf_volume(probs, image, params, executor=pool, blocks=n), depth, repeats)
        out[f"crf_slices_per_s_workers{n}"] = rate
    if len(workers) > 1:
        out["crf_pool_speedup"] = out[f"crf_slices_per_s_workers{max(workers)}"] / out["crf_slices_per_s_workers1"]

    def fake_net(x: np.ndarray) -> np.ndarray:  # returns the precomputed softmax of the volume
        return probs[: x.shape[0]]

    cfg = _Config(num_classes, params, (1.0, 1.0))
    volumes = [_Volume(f"{k:03d}", image) for k in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        for crf_on in (False, True):
            n = max(workers)
            rate = _rate(lambda: pl.generate_pseudo_labels(fake_net, volumes, cfg, tmp, crf=crf_on, workers=n,
                                                           progress=False), 2 * depth, repeats)
            out[f"generate_{'crf' if crf_on else 'argmax'}_slices_per_s_workers{n}"] = rate
    rng = np.random.default_rng(0)
    out["tta_filter_slices_per_s"] = _rate(lambda: tta_lib.tta_agreement(fake_net, image, num_classes, rng),
                                           depth, repeats)
    return out


def _bench_unet(size: int, depth: int, num_classes: int, repeats: int) -> dict:
    import keras

    from models.unet import build_unet

    model = build_unet(num_classes, (size, size))
    x = np.random.default_rng(0).random((depth, size, size, 1)).astype(np.float32)

    def predict() -> np.ndarray:
        chunks = [keras.ops.convert_to_numpy(keras.ops.softmax(model(x[i:i + 20], training=False), axis=-1))
                  for i in range(0, depth, 20)]
        return np.concatenate(chunks, 0)  # (D, H, W, C)

    return {"size": [size, size], "slices": depth, "chunk": 20,
            "unet_softmax_slices_per_s": _rate(predict, depth, repeats)}


def _dice_fg(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Mean foreground Dice over the classes present in a or b."""
    scores = []
    for c in range(1, num_classes):
        total = np.count_nonzero(a == c) + np.count_nonzero(b == c)
        if total:
            scores.append(2.0 * np.count_nonzero((a == c) & (b == c)) / total)
    return float(np.mean(scores)) if scores else float("nan")


def _crf_quality(num_patients: int = 3, seed: int = 0) -> dict:
    """Dice of argmax vs CRF labels on the synthetic dataset with simulated network outputs.

    The "network" is the ground truth one-hot, blurred by 1 px, plus Gaussian logit noise (std 1),
    blurred again and sharpened: confident, nearly right predictions with noisy boundaries. This
    shows how much the CRF parameters move such labels at the demo's 64x64 / 2.5 mm grid.
    """
    import configs
    from data.preprocess import preprocess_dataset
    from data.store import load_volumes
    from data.synthetic import generate

    cfg = configs.get_config("synthetic")
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "raw", num_patients, seed=seed)
        preprocess_dataset("synthetic", Path(tmp) / "raw", Path(tmp) / "pre")
        volumes = load_volumes(Path(tmp) / "pre", [f"{i:03d}" for i in range(1, num_patients + 1)])
    base = tuple(cfg.crf_params)
    variants = {"config": base}
    for g_sxy in (5.0, 3.0):
        variants[f"g_sxy={g_sxy:g}"] = base[:3] + (g_sxy,) + base[4:]
    scores: dict[str, list[float]] = {"argmax": [], **{k: [] for k in variants}}
    for vol in volumes:
        onehot = np.eye(cfg.num_classes)[vol.label]  # (D, H, W, C)
        logits = ndimage.gaussian_filter(4.0 * onehot, (0, 1, 1, 0)) + rng.normal(0.0, 1.0, onehot.shape)
        logits = 2.0 * ndimage.gaussian_filter(logits, (0, 0.7, 0.7, 0))
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True)).astype(np.float32)  # (D, H, W, C)
        scores["argmax"].append(_dice_fg(probs.argmax(-1), vol.label, cfg.num_classes))
        for name, params in variants.items():
            labels = crf_lib.crf_volume(probs, vol.image, params, workers=None)
            scores[name].append(_dice_fg(labels, vol.label, cfg.num_classes))
    return {"dataset": "synthetic", "volumes": num_patients, "crf_params_config": list(base),
            "mean_fg_dice_vs_gt": {k: float(np.mean(v)) for k, v in scores.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-unet", dest="unet", action="store_false", help="skip the UNet forward timing")
    parser.add_argument("--workers", default="1,2", help="comma-separated CRF worker counts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-quality", dest="quality", action="store_false",
                        help="skip the CRF-vs-argmax Dice check on synthetic data")
    args = parser.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",")})
    acdc, synthetic = tuple(configs.get_config("acdc").crf_params), tuple(configs.get_config("synthetic").crf_params)
    cases = [(32, 4, acdc)] if args.quick else [(192, 10, acdc), (64, 20, synthetic)]
    result: dict[str, Any] = {
        "benchmark": "pseudo_labels",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus_usable": crf_lib.resolve_workers(None),
                    "load_avg_1m_at_start": os.getloadavg()[0]},
    }
    if args.unet:  # first, so that the CRF pools below fork a process with TensorFlow running, as in use
        try:
            result["unet"] = [_bench_unet(size, 20 if args.quick else 40, 4, args.repeats) for size, _, _ in cases]
        except ImportError as exc:
            result["unet"] = {"missing": str(exc)}
    result["cases"] = [_bench_size(size, depth, 4, params, workers, args.repeats) for size, depth, params in cases]
    if args.quality:
        try:
            result["crf_quality"] = _crf_quality(2 if args.quick else 3)
        except ImportError as exc:
            result["crf_quality"] = {"missing": str(exc)}
    result["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
