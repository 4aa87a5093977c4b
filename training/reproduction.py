"""Every row of the MedIA 2023 table for one dataset and label setting: plan, dry run, run, paper table.

``scripts/reproduce.sh DATASET RAW OUT [TR]`` preprocesses and then calls this module:

    python -m training.reproduction --dataset acdc --data_dir OUT/prep --out_dir OUT --no_of_tr_imgs tr8 \
        [--methods ...] [--seeds 0,1] [--combs c1,c2] [--dry_run] [--step_times FILE] [--extra=...]

For every label combination of the split (:func:`combinations`: each distinct labeled list of
``--no_of_tr_imgs``, e.g. ACDC ``tr8`` = c1..c3) and seed, :func:`training.pipeline.run_pipeline`
runs the methods (default all six rows of the paper: :data:`PAPER_METHODS`) with ``--preset paper``
into ``OUT/runs/<tr>_<comb>_s<seed>`` (the GCL / LCL pre-training, which uses no labels, once per seed
in ``OUT/runs/pretrain_s<seed>``, as the originals pre-trained once and fine-tuned per combination); then ``evaluation.aggregate`` writes ``OUT/results`` with
our mean ± std over runs beside the paper's number for every row (``reference.md``).

``--dry_run`` prints every command, the training iterations per step kind and the projected hours
from measured step times (``--step_times``: a JSON with ``device`` and ``step_s`` = seconds per
step by kind, e.g. what ``scripts/gpu_smoke.sh`` writes; default :data:`DEFAULT_STEP_TIMES`, measured
on a CPU); kinds without a measured time are named, never guessed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import configs
from common.errors import InputError
from evaluation import aggregate
from training import pipeline

PAPER_METHODS = ("baseline", "gcl_lcl", "selftrain_gcl_lcl", "plc_gcl_lcl", "plc_intra", "plc")
DEFAULT_STEP_TIMES = Path(__file__).resolve().parent.parent / "bench" / "step_times_cpu.json"
STEP_KINDS = ("supervised", "joint", "global", "local")


def combinations(dataset: str, no_of_tr_imgs: str, data_dir: str | None = None) -> list[str]:
    """The label combinations of ``no_of_tr_imgs`` with distinct labeled lists, in order (c1, c2, ...).

    Sets the originals return for every combination (``trall``, ``tr10``, ``tr52``) give one.

    Raises:
        InputError: the dataset has no such labeled set.
    """
    table = configs.get_split_table(dataset, data_dir if dataset == "custom" else None)
    seen: dict[tuple[str, ...], str] = {}
    for (tr, comb), ids in sorted(table.train.items(), key=lambda kv: kv[0][1]):
        if tr == no_of_tr_imgs and tuple(ids) not in seen:
            seen[tuple(ids)] = comb
    if not seen:
        sets = sorted({tr for tr, _ in table.train})
        raise InputError(f"--no_of_tr_imgs={no_of_tr_imgs}: not a labeled set of {dataset}; valid: {', '.join(sets)}")
    return list(seen.values())


def plan(dataset: str, data_dir: str, out_dir: str, no_of_tr_imgs: str, seeds: Sequence[int],
         combs: Sequence[str] | None = None, methods: Sequence[str] = PAPER_METHODS, extra: Sequence[str] = (),
         allow_missing: bool = False, preset: str = "paper") -> list[pipeline.PipelineOptions]:
    """One :class:`training.pipeline.PipelineOptions` per (combination, seed), runs under ``out_dir/runs``."""
    valid = combinations(dataset, no_of_tr_imgs, data_dir)
    combs = list(combs) if combs else valid
    bad = [c for c in combs if c not in valid]
    if bad:
        raise InputError(f"--combs: {','.join(bad)} not a combination of {dataset} {no_of_tr_imgs}; "
                         f"valid: {','.join(valid)}")
    runs = Path(out_dir) / "runs"
    return [pipeline.make_options(preset, {}, dataset=dataset, data_dir=str(data_dir),
                                  out_dir=str(runs / f"{no_of_tr_imgs}_{comb}_s{seed}"), no_of_tr_imgs=no_of_tr_imgs,
                                  comb_tr_imgs=comb, methods=tuple(methods), seed=int(seed), extra=tuple(extra),
                                  allow_missing=allow_missing, pretrain_dir=str(runs / f"pretrain_s{seed}"))
            for seed in seeds for comb in combs]


def load_step_times(path: str | os.PathLike) -> dict[str, Any]:
    """``{"device": str, "step_s": {kind: seconds}}`` from a step-times JSON.

    Accepts ``{"device", "step_s"}`` or ``scripts/gpu_smoke.sh``'s ``{"device", "runs": {precision:
    {"step_s"}}}`` (its fp32 run).

    Raises:
        InputError: unreadable file or no ``step_s``.
    """
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--step_times: {path}: {exc}") from None
    if isinstance(obj, dict) and "runs" in obj and "step_s" not in obj:
        obj = {"device": obj.get("device"), "source": obj.get("source"), **obj["runs"].get("fp32", {})}
    if not isinstance(obj, dict) or not isinstance(obj.get("step_s"), dict):
        raise InputError(f"--step_times: {path}: no 'step_s' object (seconds per step by kind)")
    return obj


def projection(totals: dict[str, int], step_times: dict[str, Any]) -> dict[str, Any]:
    """Projected hours of the training steps: ``totals`` (iterations by kind) x measured seconds per step.

    Returns:
        ``{"device", "hours", "unmeasured": {kind: iterations}}``; ``hours`` counts the measured kinds only.
    """
    step_s = step_times["step_s"]
    seconds = sum(n * float(step_s[k]) for k, n in totals.items() if step_s.get(k) is not None)
    unmeasured = {k: n for k, n in totals.items() if step_s.get(k) is None}
    return {"device": step_times.get("device", "?"), "hours": seconds / 3600.0, "unmeasured": unmeasured}


def dry_run(runs: Sequence[pipeline.PipelineOptions], step_times: dict[str, Any]) -> str:
    """The commands of every run, the iteration totals and the projected hours (nothing is run)."""
    lines, totals, counted = [], {}, set()
    for opts in runs:
        stages, workdirs = pipeline.plan_stages(opts)
        status = pipeline.stage_status(stages)
        lines.append(f"## {opts.no_of_tr_imgs} {opts.comb_tr_imgs} seed {opts.seed}: {', '.join(workdirs)}")
        lines.append(pipeline.format_plan(opts, stages, status, workdirs))
        new = [s for s in stages if s.workdir not in counted]  # shared pre-training counted once
        counted.update(s.workdir for s in stages)
        for kind, n in pipeline.iteration_totals(new, status).items():
            totals[kind] = totals.get(kind, 0) + n
    proj = projection(totals, step_times)
    lines.append(f"## total: {len(runs)} runs; iterations to run by step kind: "
                 + (", ".join(f"{k} {totals[k]}" for k in STEP_KINDS if k in totals) or "none"))
    text = f"## projected: {proj['hours']:.1f} h of training steps on {proj['device']}"
    if proj["unmeasured"]:
        text += (" + steps without a measured time (" + ", ".join(f"{k} {n}" for k, n in proj["unmeasured"].items())
                 + "; measure them with scripts/gpu_smoke.sh and pass --step_times)")
    lines.append(text + "; pseudo-labels, validation and evaluation not included")
    if "GPU" not in str(proj["device"]):
        lines.append("## no GPU step time was measured for this projection: run scripts/gpu_smoke.sh on the GPU "
                     "and pass its JSON as --step_times")
    return "\n".join(lines)


def run(runs: Sequence[pipeline.PipelineOptions], out_dir: str, in_process: bool = False) -> dict[str, str]:
    """Run every pipeline, then write the paper-style tables (``out_dir/results``); returns the files."""
    workdirs: list[str] = []
    for opts in runs:
        opts = dataclasses.replace(opts, in_process=in_process)
        pipeline.run_pipeline(opts)
        _, wds = pipeline.plan_stages(opts)
        workdirs += [str(w) for w in wds.values()]
    return aggregate.run(workdirs, out=str(Path(out_dir) / "results"), reference="medIA2023")


if __name__ == "__main__":
    from absl import app, flags

    from common.cli import run_main

    flags.DEFINE_enum("dataset", None, list(configs.DATASETS), "dataset")
    flags.DEFINE_string("data_dir", None, "preprocessed data (scripts/reproduce.sh: OUT/prep)")
    flags.DEFINE_string("out_dir", None, "OUT: runs under OUT/runs, tables under OUT/results")
    flags.DEFINE_string("no_of_tr_imgs", "tr1", "labeled set")
    flags.DEFINE_list("combs", [], "combinations (default: every combination of the labeled set)")
    flags.DEFINE_list("seeds", ["0"], "seeds")
    flags.DEFINE_list("methods", list(PAPER_METHODS), f"methods, of {','.join(pipeline.METHODS)}")
    flags.DEFINE_multi_string("extra", [], "flag for every stage script that defines it")
    flags.DEFINE_bool("allow_missing", False, "evaluate the test volumes present (evaluate.py --allow_missing)")
    flags.DEFINE_bool("in_process", False, "run the stages in this process")
    flags.DEFINE_bool("dry_run", False, "print the commands, iterations and projected hours; run nothing")
    flags.DEFINE_string("step_times", str(DEFAULT_STEP_TIMES), "measured seconds per step (JSON) for --dry_run")

    def main(argv: list[str]) -> None:
        fv = flags.FLAGS
        if len(argv) > 1:
            raise InputError(f"unexpected arguments: {argv[1:]}")
        if not fv.dataset or not fv.data_dir or not fv.out_dir:
            raise InputError("--dataset, --data_dir and --out_dir are required")
        try:
            seeds = [int(s) for s in fv.seeds]
        except ValueError:
            raise InputError(f"--seeds: integers expected, got {','.join(fv.seeds)}") from None
        runs = plan(fv.dataset, os.path.abspath(fv.data_dir), os.path.abspath(fv.out_dir), fv.no_of_tr_imgs, seeds,
                    fv.combs, fv.methods, fv.extra, fv.allow_missing)
        if fv.dry_run:
            print(dry_run(runs, load_step_times(fv.step_times)))
        else:
            run(runs, os.path.abspath(fv.out_dir), fv.in_process)

    app.run(run_main(main))
