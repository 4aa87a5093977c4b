"""Pipeline runner: chain the stages of one dataset and label setting, like the originals' shell
scripts (``pseudo_lbl_rand_init.sh``, ``pretrain_and_fine_tune_script.sh``).

    python run_pipeline.py --dataset acdc --data_dir P --out_dir runs/acdc_tr1_c1 \
        --no_of_tr_imgs tr1 --comb_tr_imgs c1 --methods baseline,plc,gcl_lcl --preset paper

Methods (each a chain of stage scripts run as subprocesses, workdirs under ``--out_dir``):

* ``baseline``: ``train_selftrain.py --stage baseline`` -> ``baseline/``
* ``plc``: baseline -> ``--stage pseudolabel`` (``pseudolabel/``) -> ``--stage joint`` (``plc/``)
* ``gcl_lcl``: ``train_pretrain.py --stage global`` (``gcl/``) -> ``--stage local`` (``lcl/``) ->
  fine-tuning ``train_selftrain.py --stage baseline --init_from lcl`` (``gcl_lcl_ft/``)

Every trained model is then evaluated on the test volumes (``evaluate.py``, ``<workdir>/eval_test``)
and a table of test Dice per structure is printed and written to ``<out_dir>/results.md`` /
``results.json``. A stage whose workdir already holds a finished run of the same length and
settings is not rerun; an interrupted one resumes from its checkpoint, so rerunning the same
command continues. A workdir made with other settings (labeled set, seed, CRF, stage flags) is
refused, and so is a finished stage whose input stage would run again (more baseline iterations
with the pseudo-labels of the old baseline in place): use another ``--out_dir``.

Presets: ``paper`` = the originals' iteration counts (baseline 5001, joint 3 x 5000, pre-training
10001 + 10001, fine-tuning 10001); ``demo`` = a few minutes on 2 CPU cores (see ``PRESETS``).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from common.atomic import atomic_write_json, atomic_write_text
from common.errors import InputError
from common.cli import run_main
from training.config import capped
from workdir import read_config, read_eval_summary, read_summary

ROOT = Path(__file__).resolve().parent.parent

PRESETS: dict[str, dict[str, int]] = {
    "paper": {"baseline_iters": 5001, "joint_rounds": 3, "joint_iters_per_round": 5000,
              "pretrain_iters": 10001, "finetune_iters": 10001, "val_every": 50, "ckpt_every": 500, "crf": 0},
    # The dense CRF is off in both: the originals ran it, but it lowered the pseudo-labels' Dice on real
    # ACDC at 64 and 192 px (README "Real-data runs"); --crf turns it on.
    # demo: sized by measurement to fit 10 minutes with setup on 2 AVX-512 CPU cores (README "Quick start").
    "demo": {"baseline_iters": 150, "joint_rounds": 2, "joint_iters_per_round": 60,
             "pretrain_iters": 100, "finetune_iters": 150, "val_every": 20, "ckpt_every": 100, "crf": 0},
}
METHODS = ("baseline", "plc", "gcl_lcl")
# ``make demo`` as measured (in-process stages, synthetic data made and preprocessed, baseline and PLC,
# two evaluations, export; setup excluded) on the machine named here, with its fp32 matmul peak
# (``bench.matmul``); :func:`demo_estimate` scales it to another machine by the peak ratio.
DEMO_REFERENCE = {"seconds": 231.0, "matmul_gflops": 180.0, "machine": "AMD EPYC (AVX-512, AVX512_BF16), 2 cores"}
DEMO_BUDGET_S = 600.0  # the demo's promise, setup included (README)
DEMO_SETUP_S = 110.0  # make setup from a fresh clone on that machine (pip install, measured)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What ``run_pipeline.py`` resolves its flags to (iteration settings from a preset).

    Attributes:
        dataset, data_dir, out_dir, no_of_tr_imgs, comb_tr_imgs, seed: as the stage flags.
        methods: methods to run, a subset of ``METHODS``.
        baseline_iters, joint_rounds, joint_iters_per_round, pretrain_iters, finetune_iters,
            val_every, ckpt_every, crf: the iteration settings of ``PRESETS``.
        export_dir: export the PLC model as a SavedModel here (None: no export).
        extra: flags passed to every training stage.
        allow_missing: evaluate the test volumes the data dir holds when some are absent
            (``evaluate.py --allow_missing``; e.g. patient 090 of the originals' cropped ACDC copy).
        in_process: run the stages and evaluations in this process (one TensorFlow start instead
            of one per stage: ~5-10 s saved per stage on 2 CPU cores) instead of as subprocesses.
    """

    dataset: str
    data_dir: str
    out_dir: str
    no_of_tr_imgs: str
    comb_tr_imgs: str
    methods: tuple[str, ...]
    seed: int
    baseline_iters: int
    joint_rounds: int
    joint_iters_per_round: int
    pretrain_iters: int
    finetune_iters: int
    val_every: int
    ckpt_every: int
    crf: int
    export_dir: str | None = None
    extra: tuple[str, ...] = ()
    in_process: bool = False
    allow_missing: bool = False


def demo_estimate(matmul_gflops: float, reference: dict[str, Any] | None = None,
                  budget_s: float = DEMO_BUDGET_S) -> tuple[float, str]:
    """Estimated ``make demo`` seconds on a machine with this fp32 matmul peak, and a one-line note.

    The measured :data:`DEMO_REFERENCE` scaled by the ratio of matmul peaks (convolutions dominate
    the demo and follow the dense fp32 throughput; a rough guide, not a promise). The note says
    whether the estimate plus setup fits ``budget_s``.
    """
    ref = reference or DEMO_REFERENCE
    est = float(ref["seconds"]) * float(ref["matmul_gflops"]) / max(float(matmul_gflops), 1e-9)
    total = est + DEMO_SETUP_S
    note = (f"this machine: {matmul_gflops:.0f} GFLOP/s fp32 matmul; the demo should take about {est / 60:.1f} min "
            f"(measured {float(ref['seconds']) / 60:.1f} min on {ref['machine']}, {ref['matmul_gflops']:.0f} GFLOP/s)")
    if total > budget_s:
        note += (f"; this machine is slower than the demo preset assumes: expect about {total / 60:.0f} min "
                 f"with setup instead of <= {budget_s / 60:.0f}")
    return est, note


def make_options(preset: str, overrides: dict[str, Any], **settings: Any) -> PipelineOptions:
    """``PRESETS[preset]`` with the non-None ``overrides`` applied, plus the other ``settings``.

    Raises:
        InputError: unknown method.
    """
    bad = [m for m in settings.get("methods", ()) if m not in METHODS]
    if bad:
        raise InputError(f"--methods: unknown {bad}; valid: {','.join(METHODS)}")
    values = dict(PRESETS[preset])
    values.update({k: int(v) for k, v in overrides.items() if v is not None})
    values.update(settings)
    values["methods"] = tuple(values["methods"])
    values["extra"] = tuple(values.get("extra", ()))
    return PipelineOptions(**values)
LABELS = {"baseline": "supervised baseline", "plc": "PLC (pseudo-label contrastive self-training)",
          "gcl_lcl": "GCL+LCL pre-training + fine-tuning"}


def _done(workdir: Path, expected_step: int | None, **expected_conf: Any) -> bool:
    """A finished run of the expected length and settings lives in ``workdir``."""
    try:
        summary = read_summary(workdir)
        if summary is None:
            return False
        if expected_conf:
            conf = read_config(workdir)
            if any(conf.get(k) != v for k, v in expected_conf.items()):
                return False
        if expected_step is None:
            return True
        return int(summary.get("step", -1)) == int(expected_step)
    except (InputError, ValueError, TypeError):
        return False


def _run(cmd: Sequence[str], log_prefix: str, in_process: bool = False) -> None:
    print(f"\n=== {log_prefix}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    if in_process:
        _run_in_process(cmd)
    else:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(list(cmd), cwd=str(ROOT), env=env)
        if proc.returncode != 0:
            raise InputError(f"{log_prefix} failed with exit status {proc.returncode} (command above)")
    print(f"=== {log_prefix}: done in {time.time() - t0:.0f}s", flush=True)


def _run_in_process(cmd: Sequence[str]) -> None:
    """Run a command of :func:`run_pipeline` (``[python, script, --flag=value, ...]``) in this process,
    through the library call its script makes."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # as the scripts' own main does
    script, args = Path(cmd[1]).name, list(cmd[2:])
    if script in ("train_selftrain.py", "train_pretrain.py"):
        from training import flags as stage_flags
        from training.engine.strategy import configure_devices

        conf = stage_flags.parse_config(script.split("_")[1].split(".")[0], args)
        configure_devices(conf.num_replicas)
        stage_flags.run_and_report(conf)
    elif script == "evaluate.py":
        from evaluation.evaluator import evaluate_model

        fl = _command_flags(cmd)
        export_dir = fl.get("export_dir")
        evaluate_model(str(fl["workdir"]), workdir=str(fl["workdir"]), split=str(fl.get("split", "test")),
                       export_dir=None if export_dir is None else str(export_dir),
                       allow_missing=fl.get("allow_missing") is True)
        sys.stdout.flush()
    else:
        raise ValueError(f"no in-process runner for {script}")


# Flags whose change lets a stage continue in its workdir (more iterations resume it) or that do not
# change what it computes; any other flag of a stage's command must equal its config.json value.
CONTINUE_KEYS = ("n_iter", "rounds", "n_iter_per_round", "max_steps", "val_every", "ckpt_every", "jit_compile")
# Paths that name the stage's place in this out_dir (the workdir and the stages before it).
PLACE_KEYS = ("workdir", "init_from", "pseudo_label_dir")


def _command_flags(cmd: Sequence[str]) -> dict[str, Any]:
    """``--name=value`` arguments of a stage command as typed values (the last one wins, as absl)."""
    out: dict[str, Any] = {}
    for arg in cmd[2:]:
        if not arg.startswith("--") or "=" not in arg:
            continue
        name, text = arg[2:].split("=", 1)
        value: Any = text
        if text in ("true", "false"):
            value = text == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        out[name] = value
    return out


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, (bool, int, float)) and isinstance(new, (bool, int, float)):
        return old == new
    return str(old) == str(new)


def _check_settings(workdir: Path, cmd: Sequence[str]) -> None:
    """Refuse a workdir whose ``config.json`` was made with other settings than ``cmd``'s.

    A stage rerun there would resume (or reuse) the old run and report it under the new settings.
    """
    try:
        conf = read_config(workdir)
    except InputError:
        return  # no (readable) config.json: nothing ran there yet
    diffs = [(k, conf[k], v) for k, v in _command_flags(cmd).items()
             if k not in CONTINUE_KEYS + PLACE_KEYS and k in conf and not _same(conf[k], v)]
    if diffs:
        desc = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diffs)
        raise InputError(f"{workdir}: holds a run with other settings ({desc}); use another --out_dir or "
                         f"delete {workdir}")


def _expected_step(cmd: Sequence[str]) -> int | None:
    """Final step of a finished run of a training command (None: the stage has no steps)."""
    fl = _command_flags(cmd)
    if fl.get("stage") == "pseudolabel":
        return None
    total = int(fl["rounds"]) * int(fl["n_iter_per_round"]) if fl.get("stage") == "joint" else int(fl["n_iter"])
    return capped(total, int(fl.get("max_steps", 0) or 0))


def run_pipeline(opts: PipelineOptions) -> dict[str, Any]:
    """Run the requested methods; returns ``{method: eval summary dict}``.

    A stage whose workdir holds a finished run with the same settings is reused, an unfinished one
    (or one asked for more iterations) runs again and resumes. Refused before any stage runs: a
    workdir made with other settings (``_check_settings``), and a finished stage made from an
    earlier run of a stage before it that runs again now (its results would be stale).
    """
    if opts.in_process and os.environ.get("TF_CONFIG"):
        raise InputError("--in_process: not with TF_CONFIG (a multi-worker strategy can be made once per "
                         "process); run the stages as subprocesses")
    py = sys.executable
    out = Path(opts.out_dir)
    common = [f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
              f"--val_every={opts.val_every}", f"--ckpt_every={opts.ckpt_every}"] + list(opts.extra)
    split = [f"--no_of_tr_imgs={opts.no_of_tr_imgs}", f"--comb_tr_imgs={opts.comb_tr_imgs}"]
    methods = list(opts.methods)
    workdirs: dict[str, Path] = {}
    # (title, workdir, command, workdirs of the stages it is made from), in running order
    stages: list[tuple[str, Path, list[str], tuple[Path, ...]]] = []
    t_start = time.time()

    if "baseline" in methods or "plc" in methods:
        wb = out / "baseline"
        stages.append(("baseline", wb, [py, "train_selftrain.py", "--stage=baseline", f"--workdir={wb}",
                                        f"--n_iter={opts.baseline_iters}"] + common + split, ()))
        workdirs["baseline"] = wb
    if "plc" in methods:
        wb, wp, wj = workdirs["baseline"], out / "pseudolabel", out / "plc"
        crf = f"--crf={'true' if opts.crf else 'false'}"
        stages.append(("pseudolabel", wp, [py, "train_selftrain.py", "--stage=pseudolabel", f"--workdir={wp}",
                                           f"--init_from={wb}", crf] + common + split, (wb,)))
        stages.append(("joint (PLC)", wj, [
            py, "train_selftrain.py", "--stage=joint", f"--workdir={wj}", f"--init_from={wb}",
            f"--pseudo_label_dir={wp / 'pseudo_labels' / 'round_0'}", f"--rounds={opts.joint_rounds}",
            f"--n_iter_per_round={opts.joint_iters_per_round}", crf] + common + split, (wb, wp)))
        workdirs["plc"] = wj
    if "gcl_lcl" in methods:
        wg, wl, wf = out / "gcl", out / "lcl", out / "gcl_lcl_ft"
        pre = [f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
               f"--ckpt_every={opts.ckpt_every}", f"--n_iter={opts.pretrain_iters}"] + list(opts.extra)
        stages.append(("GCL pre-training", wg, [py, "train_pretrain.py", "--stage=global", f"--workdir={wg}"] + pre,
                       ()))
        stages.append(("LCL pre-training", wl, [py, "train_pretrain.py", "--stage=local", f"--workdir={wl}",
                                                f"--init_from={wg}"] + pre, (wg,)))
        stages.append(("fine-tuning", wf, [py, "train_selftrain.py", "--stage=baseline", f"--workdir={wf}",
                                           f"--init_from={wl}", f"--n_iter={opts.finetune_iters}"]
                       + common + split, (wl,)))
        workdirs["gcl_lcl"] = wf

    to_run: set[Path] = set()
    for _, wd, cmd, sources in stages:
        _check_settings(wd, cmd)
        if not _done(wd, _expected_step(cmd)):
            to_run.add(wd)
            continue
        rerun = [str(s) for s in sources if s in to_run]
        if rerun:
            raise InputError(f"{wd}: finished from an earlier run of {', '.join(rerun)}, which runs again now; "
                             f"delete {wd} (and the stages after it) or use another --out_dir")
    out.mkdir(parents=True, exist_ok=True)
    for title, wd, cmd, _ in stages:
        if wd in to_run:
            _run(cmd, title, opts.in_process)

    results: dict[str, Any] = {}
    if os.environ.get("TF_CONFIG"):
        from training.engine.strategy import tf_config_is_chief

        if not tf_config_is_chief():  # multi-worker: one evaluation, one export, by the chief
            print("\ntraining done on this worker; the chief evaluates and exports", flush=True)
            return results
    for method in [m for m in METHODS if m in workdirs]:
        wd = workdirs[method]
        cmd = [py, "evaluate.py", f"--workdir={wd}", "--split=test"]
        if method == "plc" and opts.export_dir:
            cmd.append(f"--export_dir={opts.export_dir}")
        if opts.allow_missing:
            cmd.append("--allow_missing=true")
        _run(cmd, f"evaluate {method}", opts.in_process)
        results[method] = read_eval_summary(wd / "eval_test")
    table = format_results(results)
    print("\n" + table, flush=True)
    print(f"(total {time.time() - t_start:.0f}s; workdirs under {out})", flush=True)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", {m: {"workdir": str(workdirs[m]), "summary": s}
                                              for m, s in results.items()})
    return results


def format_results(results: dict[str, Any]) -> str:
    """Markdown table of test Dice (mean ± std over volumes) per structure and method."""
    if not results:
        return "(no results)"
    first = next(iter(results.values()))
    structs = list(first["structures"])
    lines = ["| method | " + " | ".join(structs) + " | mean |",
             "|---|" + "---|" * (len(structs) + 1)]
    for method, summ in results.items():
        cells = []
        for s in structs + ["mean"]:
            stat = summ["overall"]["dice"] if s == "mean" else summ["structures"][s]["dice"]
            cells.append("n/a" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}")
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    n = first.get("n_volumes")
    return (f"Test Dice per structure ({n} test volumes, native resolution, mean ± std over volumes)\n"
            + "\n".join(lines))
