"""Aggregate evaluation summaries of several runs into paper-style tables (Markdown and CSV).

Each run is a training workdir holding ``config.json`` and an evaluation folder (default
``eval_test/summary.json``, written by ``evaluate.py``). Runs are grouped into *settings* by
(method, dataset, number of labeled volumes); the label combinations c1..c5 and seeds of a setting
are its repetitions. A cell is the mean ± population std over runs of each run's test score (the
mean over test volumes of the mean foreground Dice), like Tables 1-2 of Chaitanya et al. 2020/2023.

Usage:
    python -m evaluation.aggregate --workdirs runs/a_c1,runs/a_c2,baseline=runs/b_c1 --out results
    python -m evaluation.aggregate --out results runs/*      # workdirs as positional arguments
    python -m evaluation.aggregate --out results --reference medIA2023 runs/*/baseline runs/*/plc
                                                             # + our numbers beside the paper's

A workdir may be prefixed with ``<label>=`` to name its row; otherwise the row is named by what ran:
``config["method"]``, else the label :func:`evaluation.methods.classify` gives the recorded settings
("PLC (release)", "PLC+ (port variant: ...)", ...), else the name of the workdir's parent folder.
Which paper number a row is put beside (``--reference``) depends on the recorded settings only.
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_text
from common.errors import InputError
from evaluation.methods import classify
from evaluation.metrics import METRIC_NAMES
from evaluation.reference import compare, format_comparison, load_reference
from evaluation.report import HD95_LEGEND, METRIC_LABELS, rows_to_csv
from workdir import has_config, read_config, read_eval_summary


@dataclass
class Run:
    """One evaluated workdir."""

    workdir: str
    method: str
    dataset: str
    no_of_tr_imgs: str
    comb_tr_imgs: str
    seed: Any
    summary: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)


def method_label(config: dict[str, Any]) -> str | None:
    """Row label of a run from its (flat) ``config.json``: what ran, in words.

    ``method`` if the config records one; else :func:`evaluation.methods.classify`'s label from the
    recorded settings (e.g. "PLC (release)", "PLC+ (port variant: warm start, round floor, no CRF)",
    "GCL+LCL pre-training + fine-tuning"), so runs of different methods never share a row.
    """
    if config.get("method"):
        return str(config["method"])
    if not config.get("stage"):
        return None
    return classify(config).label


def load_run(spec: str, eval_name: str = "eval_test") -> Run:
    """Read a run from ``[method=]workdir`` (or ``[method=]path/to/summary.json``).

    Raises:
        InputError: missing workdir, config or summary.
    """
    method = None
    if "=" in spec:
        method, spec = spec.split("=", 1)
    path = Path(spec)
    if path.is_file() and path.name == "summary.json":
        summary_path, workdir = path, path.parent.parent
    else:
        if not path.is_dir():
            raise InputError(f"--workdirs: {spec} is not a directory")
        workdir = path
        summary_path = path / eval_name / "summary.json"
        if not summary_path.is_file():
            raise InputError(f"--workdirs: {summary_path} not found (run evaluate.py on {spec} first)")
    try:
        summary = read_eval_summary(summary_path)
    except InputError as exc:
        raise InputError(f"--workdirs: {exc}") from None
    config = read_config(workdir) if has_config(workdir) else {}
    if not config:
        print(f"warning: {workdir}: no config.json; its row is named by its label or folder and no paper "
              "number is matched to it", file=sys.stderr)
    method = method or method_label(config) or workdir.resolve().parent.name
    return Run(
        workdir=str(workdir), method=str(method),
        dataset=str(summary.get("dataset") or config.get("dataset") or "?"),
        no_of_tr_imgs=str(_first(config.get("no_of_tr_imgs"), summary.get("no_of_tr_imgs"), "?")),
        comb_tr_imgs=str(_first(config.get("comb_tr_imgs"), summary.get("comb_tr_imgs"), "?")),
        seed=config.get("seed"), summary=summary, config=config)


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next(v for v in values if v is not None)


def _score(run: Run, metric: str, struct: str | None) -> float:
    block = run.summary["overall"] if struct is None else run.summary["structures"].get(struct, {})
    value = block.get(metric, {}).get("mean")
    return float("nan") if value is None else float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


def _fmt(mean: float, std: float, n: int, digits: int = 3) -> str:
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def _tr_key(tr: str) -> tuple[int, str]:
    return (int(tr), tr) if tr.isdigit() else (10**6, tr)


def aggregate(runs: Sequence[Run]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Group runs into settings and compute mean ± std over runs.

    Returns:
        ``(setting_rows, run_rows)``: one row per (method, dataset, no_of_tr_imgs) with
        ``<metric>_mean`` / ``<metric>_std`` overall and per structure, and one row per run.
    """
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.method, run.dataset, run.no_of_tr_imgs)].append(run)
    setting_rows, run_rows = [], []
    for (method, dataset, tr), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0],
                                                                                  _tr_key(kv[0][2]))):
        structs = list(members[0].summary.get("structures", {}).keys())
        row: dict[str, Any] = {"dataset": dataset, "method": method, "no_of_tr_imgs": tr,
                               "n_runs": len(members),
                               "runs": " ".join(f"{m.comb_tr_imgs}/s{m.seed}" for m in members)}
        for metric in METRIC_NAMES:
            mean, std, _ = _mean_std([_score(m, metric, None) for m in members])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        for struct in structs:
            mean, std, _ = _mean_std([_score(m, "dice", struct) for m in members])
            row[f"dice_{struct}_mean"], row[f"dice_{struct}_std"] = mean, std
        setting_rows.append(row)
        for m in members:
            rr = {"dataset": dataset, "method": method, "no_of_tr_imgs": tr, "comb_tr_imgs": m.comb_tr_imgs,
                  "seed": m.seed, "workdir": m.workdir}
            rr.update({f"{metric}": _score(m, metric, None) for metric in METRIC_NAMES})
            rr.update({f"dice_{s}": _score(m, "dice", s) for s in structs})
            run_rows.append(rr)
    return setting_rows, run_rows


def markdown_tables(runs: Sequence[Run]) -> str:
    """Paper-shaped Markdown: per dataset, rows = methods, columns = number of labeled volumes.

    Cells: mean ± std over runs of the test mean foreground Dice (n = runs). A second table per dataset
    gives the per-structure Dice and the surface metrics of each setting (HD95 by both definitions,
    pooled = medpy and max-of-directed = MONAI; ``n/a`` for runs evaluated before the latter existed).
    """
    setting_rows, _ = aggregate(runs)
    by_run = defaultdict(list)
    for run in runs:
        by_run[(run.dataset, run.method, run.no_of_tr_imgs)].append(run)
    out = []
    for dataset in sorted({r["dataset"] for r in setting_rows}):
        rows = [r for r in setting_rows if r["dataset"] == dataset]
        trs = sorted({r["no_of_tr_imgs"] for r in rows}, key=_tr_key)
        methods = list(dict.fromkeys(r["method"] for r in rows))
        out.append(f"## {dataset}: mean foreground Dice on the test volumes (mean ± std over runs)\n")
        out.append("| method | " + " | ".join(f"{t} labeled" for t in trs) + " |")
        out.append("|---|" + "---|" * len(trs))
        for method in methods:
            cells = []
            for t in trs:
                members = by_run.get((dataset, method, t), [])
                cells.append(_fmt(*_mean_std([_score(m, "dice", None) for m in members])) if members else "")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        structs = list(next(iter(by_run[(dataset, rows[0]["method"], rows[0]["no_of_tr_imgs"])]))
                       .summary.get("structures", {}).keys())
        legend = "\n".join(f"- {line}" for line in HD95_LEGEND.splitlines())
        out.append(f"\n### {dataset}: per structure Dice and surface distances\n\n{legend}\n")
        head = ["method", "labeled"] + [f"Dice {s}" for s in structs] + [METRIC_LABELS[k] for k in METRIC_NAMES[1:]]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in rows:
            members = by_run[(dataset, r["method"], r["no_of_tr_imgs"])]
            cells = [_fmt(*_mean_std([_score(m, "dice", s) for m in members])) for s in structs]
            cells += [_fmt(*_mean_std([_score(m, k, None) for m in members]), digits=2)
                      for k in METRIC_NAMES[1:]]
            out.append(f"| {r['method']} | {r['no_of_tr_imgs']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def write_results(runs: Sequence[Run], out_dir: str | os.PathLike, reference: str | None = None) -> dict[str, str]:
    """Write ``results.md``, ``results.csv`` (one row per setting) and ``runs.csv`` into ``out_dir``.

    With ``reference`` (a table of :mod:`evaluation.reference`, e.g. ``medIA2023``) also
    ``reference.md`` and ``reference.csv``: our settings beside the paper's numbers.
    """
    setting_rows, run_rows = aggregate(runs)
    names = ("results.md", "results.csv", "runs.csv") + (("reference.md", "reference.csv") if reference else ())
    paths = {name: os.path.join(out_dir, name) for name in names}
    if reference:
        rows = compare(runs, reference)  # before writing anything: an unknown table is an error
        atomic_write_text(paths["reference.md"], format_comparison(rows, reference))
        atomic_write_text(paths["reference.csv"], rows_to_csv([{**r, "grids": "; ".join(r["grids"])} for r in rows]))
    atomic_write_text(paths["results.md"], markdown_tables(runs))
    atomic_write_text(paths["results.csv"], rows_to_csv(setting_rows))
    atomic_write_text(paths["runs.csv"], rows_to_csv(run_rows))
    return paths


def run(specs: Sequence[str], eval_name: str = "eval_test", out: str | os.PathLike = "results",
        reference: str | None = None) -> dict[str, str]:
    """``python -m evaluation.aggregate``: read the runs, print the tables, write the result files.

    Args:
        specs: evaluated workdirs, optionally prefixed ``<method>=``.
        eval_name: evaluation folder inside each workdir.
        out: output folder for results.md / results.csv / runs.csv.
        reference: name of a published table to put beside ours (e.g. ``medIA2023``).

    Returns:
        The written files by name.
    """
    if not specs:
        raise InputError("--workdirs: give at least one evaluated workdir")
    if reference:
        load_reference(reference)  # unknown name -> error before reading runs
    runs = [load_run(spec, eval_name) for spec in specs]
    paths = write_results(runs, out, reference)
    print(markdown_tables(runs))
    if reference:
        print(format_comparison(compare(runs, reference), reference))
    print("wrote " + ", ".join(paths.values()))
    return paths


if __name__ == "__main__":
    from absl import app, flags

    from common.cli import run_main

    flags.DEFINE_list("workdirs", [], "Evaluated workdirs, optionally prefixed '<method>='.")
    flags.DEFINE_string("eval_name", "eval_test", "Evaluation folder inside each workdir.")
    flags.DEFINE_string("out", "results", "Output folder for results.md / results.csv / runs.csv.")
    flags.DEFINE_string("reference", None, "Also put the settings beside a published table "
                        "(evaluation/reference_<name>.csv), e.g. medIA2023.")

    def main(argv: list[str]) -> None:
        fv = flags.FLAGS  # positional workdirs too (shell globs)
        run(list(fv.workdirs) + list(argv[1:]), fv.eval_name, fv.out, fv.reference)

    app.run(run_main(main))
