"""Pseudo-label generation for PLC self-training (ORIGINAL_SPEC §4.3 step 2).

For every unlabeled volume (preprocessed geometry, target resolution, as 9.3.13):
1. optional TTA agreement filter (:mod:`pseudolabels.tta`): keep the volume only if the mean
   foreground F1 between the predictions of two augmented copies exceeds ``f1_threshold``;
2. softmax of the network (``predict_fn``, inference mode);
3. label = argmax, or the dense-CRF refinement of the softmax (:mod:`pseudolabels.crf`, parameters
   ``cfg.crf_params``) when ``crf=True`` (the default of the port, as the originals);
4. ``out_dir/<id>.nii.gz`` (int16, (H, W, D), same geometry as ``<data_dir>/<id>/image.nii.gz``)
   and, last, ``out_dir/manifest.json``. Every file is written atomically, and an old manifest is
   deleted first, so a manifest exists only for a completed, consistent directory.

If every volume is rejected the manifest simply has an empty ``kept`` list (the originals crashed,
9.3.10); the caller decides what to do.
"""
from __future__ import annotations

import math
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from common.atomic import atomic_save_nifti, atomic_write_json
from common.errors import InputError, warn
from pseudolabels import crf as crf_lib
from pseudolabels import tta as tta_lib

MANIFEST = "manifest.json"
PredictFn = Callable[[np.ndarray], np.ndarray]


def _volume_rng(seed: int, vid: str) -> np.random.Generator:
    """Per-volume generator: independent of the order and number of volumes."""
    return np.random.default_rng([int(seed), zlib.crc32(str(vid).encode("utf-8"))])


def _predict(predict_fn: PredictFn, image: np.ndarray, num_classes: int, vid: str) -> np.ndarray:
    """Runs ``predict_fn`` on a (D, H, W) volume and checks it returned softmax probabilities."""
    probs = np.asarray(predict_fn(image[..., None]), dtype=np.float32)  # (D, H, W, C)
    expected = image.shape + (num_classes,)
    if probs.shape != expected:
        raise InputError(f"pseudo-labels: model output for volume {vid} has shape {probs.shape}, expected {expected}")
    if not np.all(np.isfinite(probs)):
        raise InputError(f"pseudo-labels: model output for volume {vid} is not finite (broken checkpoint?)")
    sums = probs.sum(axis=-1)  # (D, H, W)
    if probs.min() < -1e-4 or np.abs(sums - 1.0).max() > 1e-3:
        raise ValueError(f"pseudo-labels: predict_fn must return softmax probabilities (volume {vid})")
    return probs


def _reference_affine(volume: Any, cfg: Any, data_dir: str | os.PathLike | None,
                      defaulted: list[str] | None = None) -> np.ndarray:
    """Affine of the preprocessed image of ``volume`` (voxel (i, j, k) of the (H, W, D) grid -> mm).

    Preference: the header of ``<data_dir>/<id>/image.nii.gz``; then the preprocessed affine
    recomputed from ``meta`` (native ``affine`` + resampling/crop geometry, as ``data.preprocess``
    writes it); then a diagonal affine with the target resolution in-plane and the native slice
    spacing across slices. A spacing that is unknown there (no ``spacing``, or null entries as the
    ssl4mis layout records) is taken as 1 mm, and the volume id appended to ``defaulted``.
    """
    meta = getattr(volume, "meta", None) or {}
    expected = tuple(np.transpose(volume.image, (1, 2, 0)).shape)  # (H, W, D)
    if data_dir is not None:
        path = Path(data_dir) / str(volume.id) / "image.nii.gz"
        if path.exists():
            import nibabel as nib

            img = nib.load(str(path))
            if tuple(img.shape[:3]) != expected:
                raise InputError(f"{path}: shape {img.shape} differs from the loaded volume {expected}")
            return np.asarray(img.affine, dtype=np.float64)
    if all(k in meta for k in ("affine", "native_shape", "rescaled_shape", "crop_pad")):
        from data.volume_prep import preprocessed_affine

        return preprocessed_affine(np.asarray(meta["affine"], dtype=np.float64), meta)
    resolution = list(meta.get("target_resolution") or getattr(cfg, "target_resolution", None) or (None, None))
    spacing = meta.get("spacing")
    through = spacing[2] if spacing is not None and len(spacing) > 2 else None
    mm = [float(v) if v is not None else None for v in (resolution[0], resolution[1], through)]
    if None in mm and defaulted is not None:
        defaulted.append(str(volume.id))
    return np.diag([1.0 if v is None else v for v in mm] + [1.0])


def crf_params_for_grid(cfg: Any) -> "crf_lib.CRFParams":
    """``cfg.crf_params`` with the spatial stds in pixels of the grid the pseudo-labels are made on.

    The parameters are pixels of a grid of ``cfg.crf_reference_mm`` (the originals' grid for their
    datasets; ACDC's 1.36719 mm for the synthetic data and the default custom parameters); the
    preprocessed volumes are on ``cfg.target_resolution``. Same kernel in millimetres
    (:meth:`pseudolabels.crf.CRFParams.at_pixel_size`); unchanged where the two grids agree or a
    config has no pixel sizes.
    """
    params = crf_lib.CRFParams.from_sequence(cfg.crf_params)
    grid = getattr(cfg, "target_resolution", None)
    reference = getattr(cfg, "crf_reference_mm", None) or grid
    if not grid or not reference:
        return params
    return params.at_pixel_size(reference, grid)


def _write_label(path: Path, labels: np.ndarray, affine: np.ndarray) -> None:
    """Writes (D, H, W) labels as an int16 (H, W, D) NIfTI file, atomically."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    header.set_data_dtype(np.int16)
    data = np.ascontiguousarray(np.transpose(labels, (1, 2, 0)).astype(np.int16))  # (H, W, D)
    atomic_save_nifti(nib.Nifti1Image(data, affine, header), path)


def _json_float(value: float) -> float | None:
    """NaN -> None so that the manifest is strict JSON."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _dice_vs_label(reference: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                   num_classes: int) -> dict[str, float | None]:
    """Mean foreground Dice of the pseudo-labels against labels the pool happens to have.

    A diagnostic only (the pool of a semi-supervised split is unlabeled by definition; for the
    public datasets its labels exist): ``final`` scores what is written, ``argmax`` the network's
    prediction before the CRF, both on the preprocessed grid.
    """
    from evaluation.metrics import dice_per_class

    ref = np.asarray(reference).astype(np.int64)  # (D, H, W)
    out = {}
    for name, pred in (("final", labels), ("argmax", np.argmax(probs, axis=-1))):
        with np.errstate(all="ignore"):
            d = np.nanmean(dice_per_class(ref, np.asarray(pred).astype(np.int64), num_classes)[1:])
        out[name] = _json_float(float(d))
    return out


def generate_pseudo_labels(
    predict_fn: PredictFn,
    volumes: Sequence[Any],
    cfg: Any,
    out_dir: str | os.PathLike,
    *,
    crf: bool = True,
    tta_filter: bool = False,
    f1_threshold: float = 0.9,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> dict:
    """Predicts, optionally filters and CRF-refines pseudo-labels and writes them to ``out_dir``.

    Args:
        predict_fn: maps (N, H, W, 1) float32 images to (N, H, W, C) softmax probabilities
            (the network in inference mode; it may batch internally).
        volumes: objects with ``.id`` (str), ``.image`` (D, H, W) float32 and ``.meta`` (dict),
            e.g. ``data.store.Volume``.
        cfg: dataset config with ``num_classes``, ``crf_params`` (a_sxy, a_srgb, a_w1, g_sxy,
            g_w2, n_iter) and ``target_resolution``.
        out_dir: directory for ``<id>.nii.gz`` and ``manifest.json`` (created if needed).
        crf: refine with the dense CRF (else plain argmax).
        tta_filter: apply the TTA agreement filter (``--test_aug_overlap 1``).
        f1_threshold: keep a volume when its agreement is > this (``--test_f1_threshold``).
        seed: seed of the TTA augmentations (per volume, combined with the volume id).
        workers: CRF processes (``None`` or 0 = all cores, 1 = inline).
        progress: show a progress bar (only on a terminal).
        data_dir: preprocessed data directory; when given, the affine of
            ``<data_dir>/<id>/image.nii.gz`` is copied into the pseudo-label files (otherwise it
            is recomputed from ``volume.meta``, see :func:`_reference_affine`).

    Returns:
        The manifest dict (also written to ``out_dir/manifest.json``): ``kept`` and ``rejected``
        id lists, per-volume ``agreement``/``per_class_f1``/``augmentations``/timings/label
        counts, the CRF switch and parameters, the filter settings and overall timings. Volumes
        that carry a ``label`` (public datasets label their "unlabeled" pool too) also get
        ``dice_vs_label`` (mean foreground Dice of the written labels, ``final``, and of the argmax
        before the CRF, ``argmax``), averaged in ``mean_dice_vs_label`` (None without labels): a
        diagnostic, never used by training.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest is written last: its presence means the directory is complete and consistent.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    num_classes = int(cfg.num_classes)
    params = crf_params_for_grid(cfg) if crf else None
    n_workers = crf_lib.resolve_workers(workers)
    ids = [str(v.id) for v in volumes]
    if len(set(ids)) != len(ids):
        raise InputError(f"pseudo-labels: duplicate volume ids in {ids}")

    total_slices = sum(int(np.shape(v.image)[0]) for v in volumes)
    executor = None
    n_pool = min(n_workers, total_slices)
    if crf and n_pool > 1:
        executor = crf_lib.make_executor(n_pool)
    records: dict[str, dict] = {}
    defaulted: list[str] = []  # volumes whose voxel spacing is unknown (1 mm written)
    kept: list[str] = []
    rejected: list[str] = []
    slices_done = 0
    try:
        bar = tqdm(volumes, desc="pseudo-labels", unit="vol", disable=None if progress else True)
        for volume in bar:
            vid = str(volume.id)
            image = np.asarray(volume.image, dtype=np.float32)  # (D, H, W)
            if image.ndim != 3:
                raise InputError(f"pseudo-labels: volume {vid} image has shape {image.shape}, expected (D, H, W)")
            record: dict[str, Any] = {"shape_dhw": list(image.shape), "timings": {}}
            t0 = time.perf_counter()
            keep = True
            if tta_filter:
                result = tta_lib.tta_agreement(predict_fn, image, num_classes, _volume_rng(seed, vid))
                keep = result.keep(f1_threshold)
                record["agreement"] = _json_float(result.agreement)
                record["per_class_f1"] = [_json_float(v) for v in result.per_class]
                record["augmentations"] = [a.as_dict() for a in result.augmentations]
                record["timings"]["tta_s"] = time.perf_counter() - t0
            record["kept"] = keep
            path = out_dir / f"{vid}.nii.gz"
            if not keep:
                rejected.append(vid)
                if path.exists():  # stale file from an earlier run
                    path.unlink()
            else:
                t1 = time.perf_counter()
                probs = _predict(predict_fn, image, num_classes, vid)  # (D, H, W, C)
                t2 = time.perf_counter()
                record["timings"]["predict_s"] = t2 - t1
                if crf:
                    labels = crf_lib.crf_volume(
                        probs, image, params, workers=1, executor=executor, blocks=n_pool
                    )  # (D, H, W)
                    record["timings"]["crf_s"] = time.perf_counter() - t2
                    record["changed_by_crf"] = int(np.count_nonzero(labels != np.argmax(probs, axis=-1)))
                else:
                    labels = np.argmax(probs, axis=-1).astype(np.int16)  # (D, H, W)
                reference = getattr(volume, "label", None)
                if reference is not None:
                    record["dice_vs_label"] = _dice_vs_label(reference, labels, probs, num_classes)
                t3 = time.perf_counter()
                _write_label(path, labels, _reference_affine(volume, cfg, data_dir, defaulted))
                record["timings"]["write_s"] = time.perf_counter() - t3
                record["file"] = path.name
                record["label_counts"] = np.bincount(labels.ravel(), minlength=num_classes).tolist()
                kept.append(vid)
                slices_done += image.shape[0]
            record["timings"]["total_s"] = time.perf_counter() - t0
            records[vid] = record
    finally:
        if executor is not None:
            executor.shutdown()

    if defaulted:
        warn(f"pseudo-labels in {out_dir}: the voxel spacing of {len(defaulted)} volume(s) is unknown "
             f"({', '.join(defaulted[:5])}{', ...' if len(defaulted) > 5 else ''}; no data_dir image and "
             f"none recorded): their NIfTI files say 1 mm along those axes")
    elapsed = time.perf_counter() - start
    scored = [r["dice_vs_label"] for r in records.values() if "dice_vs_label" in r]
    manifest_dice = None
    if scored:
        manifest_dice = {}
        for key in scored[0]:
            values = [d[key] for d in scored if d[key] is not None]
            manifest_dice[key] = float(np.mean(values)) if values else None
        manifest_dice["volumes"] = len(scored)
    manifest = {
        "format": 1,
        "num_classes": num_classes,
        "crf": bool(crf),
        "crf_params": params.as_dict() if params is not None else None,  # in pixels of the grid used
        "crf_params_defined_at_mm": (list(getattr(cfg, "crf_reference_mm", None) or [])
                                     if params is not None else None),
        "grid_mm": list(getattr(cfg, "target_resolution", None) or []),
        "tta_filter": bool(tta_filter),
        "f1_threshold": float(f1_threshold),
        "seed": int(seed),
        "workers": n_workers,
        "kept": kept,
        "rejected": rejected,
        "mean_dice_vs_label": manifest_dice,
        "volumes": records,
        "timings": {
            "total_s": elapsed,
            "slices_labelled": slices_done,
            "slices_per_s": slices_done / elapsed if elapsed > 0 else None,
        },
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """Reads ``out_dir/manifest.json``.

    Raises:
        InputError: the manifest is missing or unreadable.
    """
    import json

    path = Path(out_dir) / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: pseudo-label manifest not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read pseudo-label manifest ({exc})") from None


def load_pseudo_labels(out_dir: str | os.PathLike, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Loads pseudo-labels written by :func:`generate_pseudo_labels`.

    Args:
        out_dir: the directory holding ``<id>.nii.gz``.
        ids: volume ids to load (typically ``read_manifest(out_dir)["kept"]``).

    Returns:
        ``{id: (D, H, W) int16 labels}``.

    Raises:
        InputError: a file is missing or not a 3D label volume.
    """
    import nibabel as nib

    out: dict[str, np.ndarray] = {}
    for vid in ids:
        path = Path(out_dir) / f"{vid}.nii.gz"
        if not path.exists():
            raise InputError(f"{path}: pseudo-label file not found")
        data = np.asarray(nib.load(str(path)).dataobj)  # (H, W, D)
        if data.ndim != 3:
            raise InputError(f"{path}: expected a 3D (H, W, D) label volume, got shape {data.shape}")
        out[str(vid)] = np.ascontiguousarray(np.transpose(data, (2, 0, 1))).astype(np.int16)  # (D, H, W)
    return out
