"""Full evaluation of a model on a split: native-grid predictions, metrics, NIfTI files, reports, plots.

Output folder layout (``evaluate.py --out_dir``, default ``<workdir>/eval_<split>``)::

    per_volume.csv          one row per volume: Dice, HD95 (mm), ASSD (mm), HD95 (voxels) per structure
    summary.json            mean ± std over volumes per structure and overall (evaluation.report)
    predictions/<id>.nii.gz int16 labels on the native grid, affine and header of native_label.nii.gz
    plots/dice_boxplot.png  per-structure Dice box plot
    plots/overlay_<id>.png  image / GT / prediction for a few slices (network grid)
    plots/training_curves.png  from the workdir's metrics.json, when there is one
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from data.atomic import atomic_save_nifti
from data.errors import InputError
from evaluation import plots, report
from evaluation.inference import CHUNK, as_predictor, native_spacing, predict_native
from evaluation.metrics import VolumeMetrics, volume_metrics


def native_prediction_image(pred: np.ndarray, native_img: Any) -> nib.Nifti1Image:
    """An int16 NIfTI of ``pred`` (H0, W0, D) with the affine and header of ``native_img``."""
    header = native_img.header.copy()
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(np.asarray(pred, dtype=np.int16), native_img.affine, header)
    img.header.set_slope_inter(1.0, 0.0)
    return img


def run_evaluation(model: Any, data_dir: str | os.PathLike, ids: Sequence[str], cfg: Any,
                   out_dir: str | os.PathLike, num_plot_volumes: int = 3, workdir: str | None = None,
                   extra: dict[str, Any] | None = None, chunk: int = CHUNK,
                   write_predictions: bool = True, verbose: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` on volumes ``ids`` of a preprocessed data directory.

    Args:
        model: a Keras UNet or a predictor (see :mod:`evaluation.inference`).
        data_dir: preprocessed data directory.
        ids: volume ids (they need ``native_label.nii.gz``).
        cfg: dataset config (``num_classes``, ``struct_names``).
        out_dir: output folder (layout in the module docstring).
        num_plot_volumes: volumes that get an overlay figure (the first ones of ``ids``).
        workdir: training workdir whose ``metrics.json`` is plotted (optional).
        extra: entries added to ``summary.json`` (dataset, split, model, ...).
        chunk: slices per forward pass.
        write_predictions: write ``predictions/<id>.nii.gz``.
        verbose: print one line per volume and the final table.

    Returns:
        The summary dict written to ``summary.json``.
    """
    from data import store

    if not ids:
        raise InputError("no volumes to evaluate (empty id list)")
    out = Path(out_dir)
    predictor = as_predictor(model)
    results: list[VolumeMetrics] = []
    for k, vid in enumerate(ids):
        t0 = time.time()
        vol = store.load_volume(data_dir, vid)
        native = store.load_native_label(data_dir, vid)
        gt = np.asarray(native.dataobj).astype(np.int64)
        pred, probs = predict_native(predictor, vol.image, vol.meta, chunk)  # (H0, W0, D), (D, H, W, C)
        if gt.shape != pred.shape:
            raise InputError(f"{data_dir}/{vid}: native label shape {gt.shape} differs from the geometry "
                             f"in meta.json {pred.shape}")
        m = volume_metrics(gt, pred, cfg.num_classes, native_spacing(native))
        results.append(m)
        if write_predictions:
            atomic_save_nifti(native_prediction_image(pred, native), out / "predictions" / f"{vid}.nii.gz")
        if k < num_plot_volumes:
            plots.overlay_figure(vol.image, vol.label, np.argmax(probs, axis=-1), cfg.num_classes,
                                 out / "plots" / f"overlay_{vid}.png", title=f"volume {vid}")
        if verbose:
            dice = ", ".join(f"{s} {m.dice[c]:.3f}" for c, s in enumerate(cfg.struct_names, start=1))
            print(f"[{k + 1}/{len(ids)}] {vid}: Dice {dice} ({time.time() - t0:.1f} s)", flush=True)
    summary = report.write_reports(out, ids, results, cfg.struct_names, extra=extra)
    plots.dice_boxplot(np.stack([m.dice for m in results]), cfg.struct_names, out / "plots" / "dice_boxplot.png",
                       title=f"Dice per structure, {len(ids)} volumes")
    if workdir is not None and (Path(workdir) / "metrics.json").is_file():
        plots.training_curves(plots.read_metrics(Path(workdir) / "metrics.json"),
                              out / "plots" / "training_curves.png", title=str(workdir))
    if verbose:
        print(report.format_table(summary))
    return summary
