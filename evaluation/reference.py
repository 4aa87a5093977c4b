"""Published results as data, and our aggregated runs beside them.

``reference_<name>.csv`` next to this module holds one row per (dataset, method, labeled set) of a
paper's table: columns ``paper, dataset, method, no_of_tr_imgs, n_labeled, dice``. Shipped:

* ``medIA2023``: Chaitanya et al., Medical Image Analysis 87 (2023), mean foreground Dice on the
  test volumes over 6 runs, |X_L| = 1 / 2 / 8 labeled volumes (``tr1``/``tr2``/``tr8``) for ACDC,
  MSD prostate and MM-WHS, and the benchmark trained on all labels (``trall``).

Which row a run of ours is put beside is decided by its recorded settings only
(:func:`evaluation.methods.classify` on its ``config.json``): a paper number is printed only beside a
run whose initialization, intra/inter choice, ``lamda_local`` and variant flags are the row's; any
other run (the ``plc_plus`` variant, a run without ``config.json``, a modified run) gets "no published
counterpart" and the reason. A ``<label>=`` prefix of ``evaluation.aggregate`` names a row of ours, it
never picks a paper number.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import InputError
from evaluation.methods import classify

REFERENCE_DIR = Path(__file__).resolve().parent
METHODS = {
    "baseline": "supervised baseline, random init",
    "baseline_gcl_lcl": "supervised baseline from GCL+LCL init",
    "self_training_gcl_lcl": "self-training from GCL+LCL init",
    "plc_inter_gcl_lcl": "proposed (inter) from GCL+LCL init",
    "plc_intra": "proposed, random init, intra",
    "plc_inter": "proposed, random init, inter",
    "benchmark": "benchmark (all labels)",
}
DESCRIPTIONS = {"medIA2023": "Chaitanya et al., MedIA 87 (2023): mean foreground Dice over 6 runs"}


@dataclass(frozen=True)
class ReferenceRow:
    """One published number."""

    paper: str
    dataset: str
    method: str
    no_of_tr_imgs: str
    n_labeled: str
    dice: float


def available() -> list[str]:
    """Names of the shipped reference tables (``reference_<name>.csv``)."""
    return sorted(p.stem.removeprefix("reference_") for p in REFERENCE_DIR.glob("reference_*.csv"))


def load_reference(name: str) -> list[ReferenceRow]:
    """The rows of reference table ``name`` (``InputError`` for an unknown name or a malformed file)."""
    path = REFERENCE_DIR / f"reference_{name}.csv"
    if not path.is_file():
        raise InputError(f"--reference={name}: unknown reference table; available: {', '.join(available())}")
    rows = []
    with open(path, newline="") as f:
        for n, rec in enumerate(csv.DictReader(f), start=2):
            try:
                row = ReferenceRow(paper=rec["paper"], dataset=rec["dataset"], method=rec["method"],
                                   no_of_tr_imgs=rec["no_of_tr_imgs"], n_labeled=rec["n_labeled"],
                                   dice=float(rec["dice"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: line {n} is malformed ({exc})") from None
            if row.method not in METHODS:
                raise InputError(f"{path}: line {n}: unknown method {row.method!r}")
            rows.append(row)
    return rows


def reference_method(config: dict[str, Any], no_of_tr_imgs: str) -> str | None:
    """The :data:`METHODS` id whose settings the run recorded in ``config`` has, or None."""
    return classify(config, no_of_tr_imgs).reference


def compare(runs: Sequence[Any], name: str) -> list[dict[str, Any]]:
    """Our settings (mean ± std over runs of the test mean Dice) beside the paper's numbers.

    Args:
        runs: ``evaluation.aggregate.Run`` records (``method``, ``dataset``, ``no_of_tr_imgs``,
            ``config``, ``summary``).
        name: reference table name.

    Returns:
        One dict per setting of ours: ``dataset``, ``method`` (ours), ``reference_method`` (or None),
        ``no_of_tr_imgs``, ``n_runs``, ``ours_mean``, ``ours_std``, ``paper`` (or None), ``difference``,
        ``grids`` (the evaluation grids of the runs), ``missing_ids`` (split volumes absent from the
        runs' data dirs, left out by ``evaluate.py --allow_missing``).
    """
    table = {(r.dataset, r.method, r.no_of_tr_imgs): r for r in load_reference(name)}
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for run in runs:
        groups[(run.dataset, run.method, run.no_of_tr_imgs)].append(run)
    out = []
    for (dataset, method, tr), members in sorted(groups.items()):
        classes = [classify(getattr(m, "config", {}) or {}, tr) for m in members]
        ref_methods = {c.reference for c in classes}
        ref_method = ref_methods.pop() if len(ref_methods) == 1 else None
        reasons = sorted({c.reason for c in classes if c.reason})
        if ref_methods:  # more than one: the runs of this row disagree
            reasons.append("its runs were made with different settings")
        scores = np.array([np.nan if m.summary["overall"]["dice"]["mean"] is None
                           else float(m.summary["overall"]["dice"]["mean"]) for m in members], dtype=np.float64)
        finite = scores[np.isfinite(scores)]
        ref = table.get((dataset, ref_method, tr)) if ref_method else None
        if ref_method and ref is None:
            reasons.append(f"the paper reports no {dataset} {tr} number for it")
        mean = float(finite.mean()) if finite.size else None
        out.append({
            "dataset": dataset, "method": method, "reference_method": ref_method, "no_of_tr_imgs": tr,
            "n_runs": int(finite.size), "ours_mean": mean, "ours_std": float(finite.std()) if finite.size else None,
            "paper": ref.dice if ref else None, "why_no_paper": "; ".join(reasons) if ref is None else "",
            "difference": (mean - ref.dice) if (ref and mean is not None) else None,
            "grids": sorted({str(m.summary.get("evaluation_grid", "native grid of the original files"))
                             for m in members}),
            "missing_ids": sorted({i for m in members for i in (m.summary.get("missing_ids") or [])}),
        })
    return out


def format_comparison(rows: Sequence[dict[str, Any]], name: str) -> str:
    """Markdown table of :func:`compare` rows with the grid(s) our numbers were scored on."""
    lines = [f"## Beside the paper: {DESCRIPTIONS.get(name, name)}\n",
             "| dataset | method (ours) | paper's method | labeled | ours: mean ± std over runs | paper | ours - paper |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "n/a" if r["ours_mean"] is None else f"{r['ours_mean']:.3f} ± {r['ours_std']:.3f} (n={r['n_runs']})"
        paper = "-" if r["paper"] is None else f"{r['paper']:.3f}"
        diff = "-" if r["difference"] is None else f"{r['difference']:+.3f}"
        if r["reference_method"]:
            ref = METHODS[r["reference_method"]] + (f" ({r['why_no_paper']})" if r["paper"] is None else "")
        else:
            ref = f"no published counterpart ({r.get('why_no_paper') or 'no matching row'})"
        lines.append(f"| {r['dataset']} | {r['method']} | {ref} | {r['no_of_tr_imgs']} | {ours} | {paper} | {diff} |")
    grids = sorted({g for r in rows for g in r["grids"]})
    lines.append("")
    lines.append("Ours: each run's score is the mean over its test volumes of the mean foreground Dice; the paper's "
                 "protocol scores on the native grid of the original files. Ours scored on: " + "; ".join(grids) + ".")
    missing = sorted({i for r in rows for i in r["missing_ids"]})
    if missing:
        lines.append(f"Test volumes absent from our data and left out: {', '.join(missing)}.")
    return "\n".join(lines) + "\n"
