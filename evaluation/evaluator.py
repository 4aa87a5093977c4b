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

import numpy as np

from common.atomic import atomic_save_nifti
from common.errors import InputError
from evaluation import plots, report
from evaluation.inference import CHUNK, as_predictor, label_image_like, native_spacing, predict_stored_volume
from evaluation.metrics import VolumeMetrics, volume_metrics
from workdir import metrics_path, read_metrics


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
    if not ids:
        raise InputError("no volumes to evaluate (empty id list)")
    out = Path(out_dir)
    predictor = as_predictor(model)
    results: list[VolumeMetrics] = []
    for k, vid in enumerate(ids):
        t0 = time.time()
        p = predict_stored_volume(predictor, data_dir, vid, chunk)
        m = volume_metrics(p.gt, p.pred, cfg.num_classes, native_spacing(p.native))
        results.append(m)
        if write_predictions:
            atomic_save_nifti(label_image_like(p.pred, p.native), out / "predictions" / f"{vid}.nii.gz")
        if k < num_plot_volumes:
            plots.overlay_figure(p.volume.image, p.volume.label, np.argmax(p.probs, axis=-1), cfg.num_classes,
                                 out / "plots" / f"overlay_{vid}.png", title=f"volume {vid}")
        if verbose:
            dice = ", ".join(f"{s} {m.dice[c]:.3f}" for c, s in enumerate(cfg.struct_names, start=1))
            print(f"[{k + 1}/{len(ids)}] {vid}: Dice {dice} ({time.time() - t0:.1f} s)", flush=True)
    summary = report.write_reports(out, ids, results, cfg.struct_names, extra=extra)
    plots.dice_boxplot(np.stack([m.dice for m in results]), cfg.struct_names, out / "plots" / "dice_boxplot.png",
                       title=f"Dice per structure, {len(ids)} volumes")
    if workdir is not None and metrics_path(workdir).is_file():
        plots.training_curves(read_metrics(workdir), out / "plots" / "training_curves.png", title=str(workdir))
    if verbose:
        print(report.format_table(summary))
    return summary
