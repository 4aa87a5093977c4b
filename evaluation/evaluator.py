"""Full evaluation of a model on a split: native-grid predictions, metrics, NIfTI files, reports, plots.

Output folder layout (``evaluate.py --out_dir``, default ``<workdir>/eval_<split>``)::

    per_volume.csv          one row per volume: Dice, HD95 (pooled = medpy: hd95_*, max-of-directed = MONAI:
                            hd95_max_*) / ASSD in mm and in voxels per structure
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

import configs
from common.atomic import atomic_save_nifti
from common.errors import InputError, warn
from configs.base import REFERENCE_SPLIT_KEY
from evaluation import plots, report
from evaluation.inference import CHUNK, as_predictor, label_image_like, predict_stored_volume, surface_spacing
from evaluation.methods import classify
from evaluation.metrics import VolumeMetrics, volume_metrics
from workdir import has_config, metrics_path, read_config, read_metrics


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
        The summary dict written to ``summary.json``; it says in ``surface_distance_units`` (and
        ``surface_note``) whether HD95 / ASSD exist in mm or, for volumes without a known voxel
        spacing, in voxels only, and in ``evaluation_grid`` which grid the scores are on.
    """
    if not ids:
        raise InputError("no volumes to evaluate (empty id list)")
    out = Path(out_dir)
    predictor = as_predictor(model)
    results: list[VolumeMetrics] = []
    no_spacing: list[str] = []
    for k, vid in enumerate(ids):
        t0 = time.time()
        p = predict_stored_volume(predictor, data_dir, vid, chunk)
        spacing = surface_spacing(p.volume.meta, p.native)
        if spacing is None:
            no_spacing.append(vid)
        m = volume_metrics(p.gt, p.pred, cfg.num_classes, spacing)
        results.append(m)
        if write_predictions:
            atomic_save_nifti(label_image_like(p.pred, p.native), out / "predictions" / f"{vid}.nii.gz")
        if k < num_plot_volumes:
            plots.overlay_figure(p.volume.image, p.volume.label, np.argmax(p.probs, axis=-1), cfg.num_classes,
                                 out / "plots" / f"overlay_{vid}.png", title=f"volume {vid}")
        if verbose:
            dice = ", ".join(f"{s} {m.dice[c]:.3f}" for c, s in enumerate(cfg.struct_names, start=1))
            print(f"[{k + 1}/{len(ids)}] {vid}: Dice {dice} ({time.time() - t0:.1f} s)", flush=True)
    summary = report.write_reports(out, ids, results, cfg.struct_names,
                                   extra={**(extra or {}), **surface_units(data_dir, ids, no_spacing)})
    plots.dice_boxplot(np.stack([m.dice for m in results]), cfg.struct_names, out / "plots" / "dice_boxplot.png",
                       title=f"Dice per structure, {len(ids)} volumes")
    if workdir is not None and metrics_path(workdir).is_file():
        plots.training_curves(read_metrics(workdir), out / "plots" / "training_curves.png", title=str(workdir))
    if verbose:
        print(report.format_table(summary))
    return summary


def surface_units(data_dir: str | os.PathLike, ids: Sequence[str], no_spacing: Sequence[str]) -> dict[str, Any]:
    """Summary entries naming the grid and the units of the surface distances (honest about pixels).

    Args:
        data_dir: the preprocessed data directory (its ``dataset.json`` names the evaluation grid).
        ids: all evaluated volume ids.
        no_spacing: the ids whose voxel spacing is unknown (HD95 / ASSD in voxels only).
    """
    from data.store import read_dataset_json

    grid = read_dataset_json(data_dir).get("evaluation_grid", "native grid of the original files")
    out: dict[str, Any] = {"evaluation_grid": grid}
    if not no_spacing:
        out["surface_distance_units"] = "mm and voxels"
    elif len(no_spacing) == len(ids):
        out["surface_distance_units"] = "voxels only"
        out["surface_note"] = ("HD95/ASSD in pixels (voxels) only: the data dir does not record the full voxel spacing "
                               "(preprocess with --pixel_spacing X,Y,Z for mm)")
    else:
        out["surface_distance_units"] = "mm for some volumes"
        out["surface_note"] = (f"HD95/ASSD in mm exclude {len(no_spacing)} volume(s) without a known voxel spacing "
                               f"({', '.join(no_spacing[:5])}{'...' if len(no_spacing) > 5 else ''}): voxels only")
    return out


def present_ids(data_dir: str | os.PathLike, ids: Sequence[str], allow_missing: bool = False,
                what: str = "test") -> tuple[list[str], list[str]]:
    """Split ``ids`` into those the data dir holds and those it lacks.

    Some public copies lack volumes (the originals' cropped ACDC copy has no patient 090, one of the
    20 test patients). A missing id is an error unless ``allow_missing``; then the caller evaluates
    the others and must report the missing ones (``evaluate.py`` writes them to ``summary.json``).

    Raises:
        InputError: ids are missing and ``allow_missing`` is false, or none is present.
    """
    from data.store import list_ids

    known = set(list_ids(data_dir))
    present = [i for i in ids if i in known]
    missing = [i for i in ids if i not in known]
    if missing and not allow_missing:
        raise InputError(f"--data_dir={data_dir}: {len(missing)} of the {len(ids)} {what} volumes are absent "
                         f"({', '.join(missing[:6])}{'...' if len(missing) > 6 else ''}); --allow_missing evaluates "
                         "the others and records the absent ones")
    if not present:
        raise InputError(f"--data_dir={data_dir}: none of the {len(ids)} {what} volumes is present")
    return present, missing
PROTOCOL = ("native grid (undo crop/pad, linear resize of probabilities, argmax); Dice per class over the 3-D "
            "volume; NaN (absent from GT and prediction) excluded; surface distances in mm with the voxel spacing "
            "recorded at preprocessing (voxels only when it is unknown), inf when one mask is empty, means over "
            "finite values; HD95 pooled (medpy, hd95_*) and max-of-directed (MONAI, hd95_max_*) from the same "
            "directed distances")


def _method_label(workdir: str | None) -> str:
    """What ran in ``workdir``, named from its recorded settings (:mod:`evaluation.methods`)."""
    if not workdir or not has_config(workdir):
        return "unknown (no stage workdir config.json)"
    return classify(read_config(workdir)).label


def split_key(dataset: str, split: str, no_of_tr_imgs: str | None, comb_tr_imgs: str | None,
              data_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(no_of_tr_imgs, comb_tr_imgs)`` whose ``split`` (``val``/``test``) volumes to evaluate on.

    Both known: themselves. Otherwise (a model outside a stage workdir, no flags) the known part
    selects the candidate splits of ``dataset``; when their ``split`` volumes are all the same, one
    of them (``tr1``/``c1`` if it is one) is used and one line says so, else it is an error.

    Raises:
        InputError: no split matches, or the ``split`` volumes depend on the unknown part.
    """
    if no_of_tr_imgs and comb_tr_imgs:
        return str(no_of_tr_imgs), str(comb_tr_imgs)
    table = configs.get_split_table(dataset, data_dir)
    keys = sorted(k for k in table.train if no_of_tr_imgs in (None, k[0]) and comb_tr_imgs in (None, k[1]))
    if not keys:
        configs.get_split(dataset, str(no_of_tr_imgs or REFERENCE_SPLIT_KEY[0]),
                          str(comb_tr_imgs or REFERENCE_SPLIT_KEY[1]), data_dir=data_dir)  # raises, listing the valid ones
    attr = "val" if split == "val" else "test"
    volumes = {k: getattr(configs.get_split(dataset, *k, data_dir=data_dir), attr) for k in keys}
    unknown = " and ".join(f"--{name}" for name, v in (("no_of_tr_imgs", no_of_tr_imgs),
                                                       ("comb_tr_imgs", comb_tr_imgs)) if not v)
    if len(set(volumes.values())) > 1:
        raise InputError(f"{unknown}: not given and not recorded with the model (no stage workdir config.json), "
                         f"and the {split} volumes of {dataset} depend on them; pass them")
    key = REFERENCE_SPLIT_KEY if REFERENCE_SPLIT_KEY in keys else keys[0]
    warn(f"{unknown}: not given and not recorded with the model; using the {split} volumes of "
         f"{key[0]}/{key[1]} (the same for every labeled set of {dataset})")
    return key


def evaluate_model(model_path: str, *, workdir: str | None = None, data_dir: str | None = None,
                   dataset: str | None = None, split: str = "test", no_of_tr_imgs: str | None = None,
                   comb_tr_imgs: str | None = None, ids: Sequence[str] | None = None, out_dir: str | None = None,
                   export_dir: str | None = None, num_plot_volumes: int = 3, write_predictions: bool = True,
                   allow_missing: bool = False, precision: str | None = None) -> dict[str, Any]:
    """``evaluate.py``: evaluate a trained model on the ``split`` volumes of its data directory.

    Every argument left ``None`` comes from the workdir's ``config.json`` (``data_dir``, ``dataset``,
    ``no_of_tr_imgs``, ``comb_tr_imgs``; otherwise :func:`split_key`); the dataset config from
    :func:`workdir.model_dataset_config`. Writes ``out_dir`` (default ``<workdir>/eval_<split>``)
    and, with ``export_dir``, a SavedModel. Split volumes absent from the data dir are an error
    unless ``allow_missing`` (then they are left out and listed in the summary). ``precision``:
    the network's ``--precision`` (None = fp32; see :func:`workdir.load_model`), also that of the export.

    Returns:
        The evaluation summary.
    """
    import keras

    from evaluation.export import data_n4_settings, describe_signatures, export_saved_model, metadata_for
    from workdir import find_workdir, load_model, model_dataset_config, run_info

    info = run_info(workdir or model_path)
    data_dir = data_dir or info.data_dir
    if not data_dir:
        raise InputError("--data_dir: not given and not recorded in the workdir config.json")
    model, name = load_model(model_path, dataset or info.dataset, data_dir=data_dir, precision=precision)
    if name is None:
        raise InputError("--dataset: unknown for this model (no workdir config.json); pass --dataset")
    cfg = model_dataset_config(str(name), model_path, data_dir)
    no_tr, comb = no_of_tr_imgs or info.no_of_tr_imgs, comb_tr_imgs or info.comb_tr_imgs
    if not ids:
        no_tr, comb = split_key(cfg.name, split, no_tr, comb, data_dir)
        lists = configs.get_split(cfg.name, str(no_tr), str(comb), data_dir=data_dir)
        ids = list(lists.val if split == "val" else lists.test)
    ids = list(ids)
    ids, missing = present_ids(data_dir, ids, allow_missing, what=split)
    found = find_workdir(model_path)
    workdir = workdir or (str(found) if found is not None else None)
    out_dir = out_dir or (os.path.join(workdir, f"eval_{split}") if workdir else None)
    if out_dir is None:
        raise InputError("--out_dir: required when --model is not inside a stage workdir")
    print(f"evaluating {model_path} on {len(ids)} {split} volumes of {cfg.name} "
          f"({no_tr}/{comb}) from {data_dir} -> {out_dir}", flush=True)
    if missing:
        print(f"warning: {len(missing)} {split} volume(s) absent from the data dir and left out: "
              f"{', '.join(missing)}", flush=True)
    extra = {"dataset": cfg.name, "split": split, "no_of_tr_imgs": None if no_tr is None else str(no_tr),
             "comb_tr_imgs": None if comb is None else str(comb),
             "model": os.path.abspath(model_path), "data_dir": os.path.abspath(data_dir), "missing_ids": missing,
             "protocol": PROTOCOL, "precision": _model_precision(model, model_path),
             "method": _method_label(workdir)}
    summary = run_evaluation(model, data_dir, ids, cfg, out_dir, num_plot_volumes=num_plot_volumes,
                             workdir=workdir, extra=extra, write_predictions=write_predictions)
    print(f"wrote {os.path.join(out_dir, 'summary.json')}, per_volume.csv, predictions/, plots/")
    if export_dir:
        if not isinstance(model, keras.Model):
            raise InputError("--export_dir: the model is already a SavedModel")
        metadata = metadata_for(cfg)
        metadata.update(data_n4_settings(data_dir))
        path = export_saved_model(model, export_dir, metadata)
        print(f"exported SavedModel to {path}: {describe_signatures(path)}")
    return summary


def _model_precision(model: Any, model_path: str) -> str:
    """The precision the network computes in: a Keras model's policy, else the SavedModel's metadata."""
    import keras

    from models.precision import precision_of
    from workdir import saved_model_metadata

    if isinstance(model, keras.Model):
        return precision_of(model)
    return str(saved_model_metadata(model_path).get("precision", "fp32"))
