"""Evaluation reports: per-volume CSV, summary JSON (mean ± std per structure and overall), table.

Conventions (Chaitanya protocol, DESIGN.md "Evaluation conventions"):
* a volume's overall score is the mean over its foreground structures, ignoring NaN (structure absent
  from both GT and prediction) and, for the surface metrics, ignoring inf (one mask empty);
* summary statistics are taken over volumes: mean and population standard deviation (``ddof=0``)
  of the finite values, with ``n`` (volumes that have a finite value) and ``n_inf`` (volumes where
  the structure was missed or hallucinated, surface distance infinite);
* HD95 comes in both published definitions: ``hd95_mm`` / ``hd95_vox`` pooled (medpy, SSL4MIS-style
  papers) and ``hd95_max_mm`` / ``hd95_max_vox`` max-of-directed (MONAI, many nnU-Net-based papers);
  ``summary.json`` spells them out in ``metric_definitions`` and the table names them in a legend.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.atomic import atomic_write_json, atomic_write_text
from evaluation.metrics import METRIC_DEFINITIONS, METRIC_NAMES, VolumeMetrics, foreground_mean

METRIC_LABELS = {"dice": "Dice", "hd95_mm": "HD95 medpy (mm)", "hd95_max_mm": "HD95 MONAI (mm)",
                 "assd_mm": "ASSD (mm)", "hd95_vox": "HD95 medpy (vox)", "hd95_max_vox": "HD95 MONAI (vox)",
                 "assd_vox": "ASSD (vox)"}
HD95_LEGEND = ("HD95 medpy: P95 of both directed surface distances pooled (medpy.metric.binary.hd95; "
               "SSL4MIS-style papers)\n"
               "HD95 MONAI: max of the two directed P95 (MONAI HausdorffDistanceMetric; MONAI- and many "
               "nnU-Net-based papers)")


def per_volume_rows(ids: Sequence[str], results: Sequence[VolumeMetrics],
                    struct_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per volume: ``id``, ``<metric>_<struct>`` for each structure, ``<metric>_mean``.

    Args:
        ids: volume ids.
        results: metrics of each volume (arrays ``(C,)`` with C = len(struct_names) + 1).
        struct_names: foreground structure names (classes 1..C-1).

    Returns:
        Rows as dicts of floats (NaN / inf kept).
    """
    rows = []
    for vid, m in zip(ids, results, strict=True):
        row: dict[str, Any] = {"id": vid}
        for name in METRIC_NAMES:
            values = getattr(m, name)
            for c, struct in enumerate(struct_names, start=1):
                row[f"{name}_{struct}"] = float(values[c])
            row[f"{name}_mean"] = foreground_mean(values, finite_only=name != "dice")
        rows.append(row)
    return rows


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of ``rows`` (columns in the order of the first row; floats with 6 decimals)."""
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and math.isfinite(v) else v)
                         for k, v in row.items()})
    return buf.getvalue()


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "n": int(finite.size),
        "n_inf": int(np.isinf(v).sum()),
    }


def summarize(ids: Sequence[str], results: Sequence[VolumeMetrics], struct_names: Sequence[str],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean ± std over volumes per structure and overall (JSON-ready: no NaN, ``None`` instead).

    Args:
        ids: volume ids.
        results: per-volume metrics.
        struct_names: foreground structure names.
        extra: additional top-level entries (dataset, split, model path, ...).

    Returns:
        ``{"n_volumes", "ids", "structures": {struct: {metric: {"mean","std","n","n_inf"}}},
        "overall": {metric: {...}}, "std": "population (ddof=0) over volumes",
        "metric_definitions": {metric: text}, ...extra}`` with every metric of ``METRIC_NAMES``
        (both HD95 definitions).
    """
    rows = per_volume_rows(ids, results, struct_names)
    summary: dict[str, Any] = dict(extra or {})
    summary["n_volumes"] = len(rows)
    summary["ids"] = list(ids)
    summary["std"] = "population standard deviation (ddof=0) over volumes"
    summary["metric_definitions"] = dict(METRIC_DEFINITIONS)
    summary["structures"] = {
        s: {name: _stats([r[f"{name}_{s}"] for r in rows]) for name in METRIC_NAMES} for s in struct_names}
    summary["overall"] = {name: _stats([r[f"{name}_mean"] for r in rows]) for name in METRIC_NAMES}
    return summary


_MISSING: dict[str, Any] = {"mean": None}  # a metric absent from an older summary


def _cell(stat: dict[str, Any], digits: int) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    if stat.get("n_inf"):
        text += f" ({stat['n_inf']} inf)"
    return text


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per structure plus ``mean``; columns Dice, HD95 (pooled and
    max-of-directed) / ASSD in mm and voxels, then legend lines naming the two HD95 definitions.

    The summary's ``surface_note`` (written by the evaluator when HD95 / ASSD are in pixels only, or
    only for some volumes) is printed under the table. Summaries written before the max-of-directed
    HD95 existed show ``n/a`` in its columns.
    """
    header = ["structure"] + [METRIC_LABELS[m] for m in METRIC_NAMES]
    lines = [header]
    for struct, stats in [*summary["structures"].items(), ("mean", summary["overall"])]:
        lines.append([struct] + [_cell(stats.get(m, _MISSING), 3 if m == "dice" else 2) for m in METRIC_NAMES])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(out) + f"\n({summary['n_volumes']} volumes; mean ± std over volumes)\n{HD95_LEGEND}"
    grid = summary.get("evaluation_grid")
    if grid and not str(grid).startswith("native grid"):
        text += f"\nscored on {grid}"
    if summary.get("surface_note"):
        text += f"\n{summary['surface_note']}"
    return text


def write_reports(out_dir: str | os.PathLike, ids: Sequence[str], results: Sequence[VolumeMetrics],
                  struct_names: Sequence[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``per_volume.csv`` and ``summary.json`` into ``out_dir`` (atomically).

    Returns:
        The summary dict.
    """
    rows = per_volume_rows(ids, results, struct_names)
    atomic_write_text(os.path.join(out_dir, "per_volume.csv"), rows_to_csv(rows))
    summary = summarize(ids, results, struct_names, extra)
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
