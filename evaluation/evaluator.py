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

from data.atomic import atomic_save_nifti
from data.errors import InputError
from evaluation import plots, report
from evaluation.inference import CHUNK, as_predictor, label_image_like, native_spacing, predict_stored_volume
from evaluation.metrics import VolumeMetrics, volume_metrics


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
    if workdir is not None and (Path(workdir) / "metrics.json").is_file():
        plots.training_curves(plots.read_metrics(Path(workdir) / "metrics.json"),
                              out / "plots" / "training_curves.png", title=str(workdir))
    if verbose:
        print(report.format_table(summary))
    return summary


PROTOCOL = ("native grid (undo crop/pad, linear resize of probabilities, argmax); Dice per class over the 3-D "
            "volume; NaN (absent from GT and prediction) excluded; surface distances with header spacing, inf "
            "when one mask is empty, means over finite values")


def evaluate_model(model_path: str, *, workdir: str | None = None, data_dir: str | None = None,
                   dataset: str | None = None, split: str = "test", no_of_tr_imgs: str | None = None,
                   comb_tr_imgs: str | None = None, ids: Sequence[str] | None = None, out_dir: str | None = None,
                   export_dir: str | None = None, num_plot_volumes: int = 3,
                   write_predictions: bool = True) -> dict[str, Any]:
    """``evaluate.py``: evaluate a trained model on the ``split`` volumes of its data directory.

    Every argument left ``None`` comes from the workdir's ``config.json`` (``data_dir``, ``dataset``,
    ``no_of_tr_imgs``, ``comb_tr_imgs``; ``tr1`` / ``c1`` otherwise); the dataset config from
    :func:`evaluation.inference.model_dataset_config`. Writes ``out_dir`` (default
    ``<workdir>/eval_<split>``) and, with ``export_dir``, a SavedModel.

    Returns:
        The evaluation summary.
    """
    import keras

    import configs
    from evaluation.export import data_n4, export_saved_model, metadata_for
    from evaluation.inference import (config_value, find_workdir, load_model_and_dataset, model_dataset_config,
                                      workdir_config)

    config = workdir_config(workdir or model_path)
    data_dir = data_dir or config_value(config, "data_dir")
    if not data_dir:
        raise InputError("--data_dir: not given and not recorded in the workdir config.json")
    model, name = load_model_and_dataset(model_path, dataset or config_value(config, "dataset"), data_dir)
    if name is None:
        raise InputError("--dataset: unknown for this model (no workdir config.json); pass --dataset")
    cfg = model_dataset_config(str(name), model_path, data_dir)
    no_tr = no_of_tr_imgs or config_value(config, "no_of_tr_imgs") or "tr1"
    comb = comb_tr_imgs or config_value(config, "comb_tr_imgs") or "c1"
    lists = configs.get_split(cfg.name, str(no_tr), str(comb), data_dir=data_dir)
    ids = list(ids) if ids else list(lists.val if split == "val" else lists.test)
    found = find_workdir(model_path)
    workdir = workdir or (str(found) if found is not None else None)
    out_dir = out_dir or (os.path.join(workdir, f"eval_{split}") if workdir else None)
    if out_dir is None:
        raise InputError("--out_dir: required when --model is not inside a stage workdir")
    print(f"evaluating {model_path} on {len(ids)} {split} volumes of {cfg.name} "
          f"({no_tr}/{comb}) from {data_dir} -> {out_dir}", flush=True)
    extra = {"dataset": cfg.name, "split": split, "no_of_tr_imgs": str(no_tr), "comb_tr_imgs": str(comb),
             "model": os.path.abspath(model_path), "data_dir": os.path.abspath(data_dir), "protocol": PROTOCOL}
    summary = run_evaluation(model, data_dir, ids, cfg, out_dir, num_plot_volumes=num_plot_volumes,
                             workdir=workdir, extra=extra, write_predictions=write_predictions)
    print(f"wrote {os.path.join(out_dir, 'summary.json')}, per_volume.csv, predictions/, plots/")
    if export_dir:
        if not isinstance(model, keras.Model):
            raise InputError("--export_dir: the model is already a SavedModel")
        metadata = metadata_for(cfg)
        metadata["n4"] = data_n4(data_dir)
        path = export_saved_model(model, export_dir, metadata)
        print(f"exported SavedModel to {path}")
    return summary
