"""Published results as data, and our aggregated runs beside them.

``reference_<name>.csv`` next to this module holds one row per (dataset, method, labeled set) of a
paper's table: columns ``paper, dataset, method, no_of_tr_imgs, n_labeled, dice``. Shipped:

* ``medIA2023``: Chaitanya et al., Medical Image Analysis 87 (2023), mean foreground Dice on the
  test volumes over 6 runs, |X_L| = 1 / 2 / 8 labeled volumes (``tr1``/``tr2``/``tr8``) for ACDC,
  MSD prostate and MM-WHS, and the benchmark trained on all labels (``trall``).

Method ids (``METHODS``) and how a run of ours is matched to one (:func:`reference_method`):
a run labeled with a method id (``--workdirs plc_intra=W``) is that method; otherwise the workdir's
``config.json`` decides: a supervised ``baseline`` stage without ``--init_from`` is ``baseline``
(``benchmark`` on ``trall``), one initialized from a local (GCL + LCL) pre-training is
``baseline_gcl_lcl``, a ``joint`` stage is ``plc_inter`` / ``plc_intra`` (``--local_loss_exp_no``
1 / 0) when its baseline started from random weights, ``plc_inter_gcl_lcl`` when the baseline was
fine-tuned after GCL + LCL, and ``self_training_gcl_lcl`` for ``--lamda_local 0`` there.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import InputError
from workdir import has_config, read_config

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


def _stage_config(workdir: Any) -> dict[str, Any]:
    """The workdir's ``config.json`` ({} when it has none, e.g. a moved or deleted workdir)."""
    return read_config(workdir) if workdir and has_config(workdir) else {}


def _from_gcl_lcl(baseline_config: dict[str, Any]) -> bool:
    """Whether a baseline stage was initialized from a local (GCL + LCL) pre-training workdir."""
    init = baseline_config.get("init_from")
    return bool(init) and _stage_config(init).get("stage") == "local"


def reference_method(label: str, config: dict[str, Any], no_of_tr_imgs: str) -> str | None:
    """The :data:`METHODS` id a run of ours corresponds to, or ``None`` (see the module docstring).

    Args:
        label: the run's method label (``evaluation.aggregate``: ``method=`` prefix, ``config["method"]``,
            the stage, ``baseline<-local`` for a fine-tuned baseline, ...).
        config: the run's ``config.json``.
        no_of_tr_imgs: the run's labeled set (``trall`` makes a random-init baseline the benchmark).
    """
    if label in METHODS and label != "baseline":  # "baseline" is also the stage label: trall makes it the benchmark
        return label
    stage = config.get("stage")
    if label in ("gcl_lcl", "baseline<-local") or (stage == "baseline" and _from_gcl_lcl(config)):
        return "baseline_gcl_lcl"
    if label == "baseline" or (stage == "baseline" and not config.get("init_from")):
        return "benchmark" if no_of_tr_imgs == "trall" else "baseline"
    if label in ("plc", "joint") or stage == "joint":
        exp = config.get("local_loss_exp_no")
        inter = exp is None or int(exp) == 1
        lamda = config.get("lamda_local")
        if _from_gcl_lcl(_stage_config(config.get("init_from"))):
            if lamda is not None and float(lamda) == 0.0:
                return "self_training_gcl_lcl"
            return "plc_inter_gcl_lcl" if inter else None
        return "plc_inter" if inter else "plc_intra"
    return None


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
        ref_methods = {reference_method(m.method, getattr(m, "config", {}) or {}, tr) for m in members}
        ref_method = ref_methods.pop() if len(ref_methods) == 1 else None
        scores = np.array([np.nan if m.summary["overall"]["dice"]["mean"] is None
                           else float(m.summary["overall"]["dice"]["mean"]) for m in members], dtype=np.float64)
        finite = scores[np.isfinite(scores)]
        ref = table.get((dataset, ref_method, tr)) if ref_method else None
        mean = float(finite.mean()) if finite.size else None
        out.append({
            "dataset": dataset, "method": method, "reference_method": ref_method, "no_of_tr_imgs": tr,
            "n_runs": int(finite.size), "ours_mean": mean, "ours_std": float(finite.std()) if finite.size else None,
            "paper": ref.dice if ref else None,
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
        ref = METHODS.get(r["reference_method"], "no published number") if r["reference_method"] else "no match"
        lines.append(f"| {r['dataset']} | {r['method']} | {ref} | {r['no_of_tr_imgs']} | {ours} | {paper} | {diff} |")
    grids = sorted({g for r in rows for g in r["grids"]})
    lines.append("")
    lines.append("Ours: each run's score is the mean over its test volumes of the mean foreground Dice; the paper's "
                 "protocol scores on the native grid of the original files. Ours scored on: " + "; ".join(grids) + ".")
    missing = sorted({i for r in rows for i in r["missing_ids"]})
    if missing:
        lines.append(f"Test volumes absent from our data and left out: {', '.join(missing)}.")
    return "\n".join(lines) + "\n"
