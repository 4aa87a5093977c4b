"""Pipeline runner: chain the stages of one dataset and label setting, like the originals' shell
scripts (``pseudo_lbl_rand_init.sh``, ``pretrain_and_fine_tune_script.sh``).

    python run_pipeline.py --dataset acdc --data_dir P --out_dir runs/acdc_tr1_c1 \
        --no_of_tr_imgs tr1 --comb_tr_imgs c1 --methods baseline,plc,gcl_lcl --preset paper

Methods (``--methods``; the rows of the MedIA 2023 table, plus the port's variant), each a chain of
stage scripts run as subprocesses (or in this process), workdirs under ``--out_dir``:

* ``baseline``: ``train_selftrain.py --stage baseline`` (random init) -> ``baseline/``
* ``gcl_lcl``: ``train_pretrain.py --stage global`` (``gcl/``) -> ``--stage local`` (``lcl/``) ->
  fine-tuning ``train_selftrain.py --stage baseline --init_from lcl`` (``gcl_lcl_ft/``)
* ``plc`` / ``plc_intra``: baseline -> ``--stage pseudolabel`` (``pseudolabel/``, dense CRF on) ->
  ``--stage joint`` inter / intra (``plc/``, ``plc_intra/``), the release's behaviour
  (:data:`RELEASE_JOINT_FLAGS`)
* ``plc_gcl_lcl`` / ``selftrain_gcl_lcl``: the GCL+LCL fine-tuned model -> pseudo-labels
  (``pseudolabel_gcl_lcl/``) -> joint inter (``plc_gcl_lcl/``) / joint with ``--lamda_local=0``,
  self-training without the contrastive term (``selftrain_gcl_lcl/``)
* ``plc_plus``: the port's variant (:data:`PLUS_JOINT_FLAGS`: warm start, round floor, no CRF,
  mean-over-pairs weighting): baseline -> ``pseudolabel_nocrf/`` -> ``plc_plus/``

Every trained model is then evaluated on the test volumes (``evaluate.py``, ``<workdir>/eval_test``)
and a table of test Dice per structure, each row named by what ran (:mod:`evaluation.methods`), is
printed and written to ``<out_dir>/results.md`` / ``results.json``. A stage whose workdir already
holds a finished run of the same length and settings is not rerun; an interrupted one resumes from
its checkpoint, so rerunning the same command continues. A workdir made with other settings
(labeled set, seed, CRF, stage flags) is refused, and so is a finished stage whose input stage would
run again (more baseline iterations with the pseudo-labels of the old baseline in place): use another
``--out_dir``. ``--dry_run`` prints the commands and what each stage would do, and runs nothing.

Presets: ``paper`` = the paper's iteration counts (baseline 5001, joint 3 x 5000, pre-training
10001 + 10001, fine-tuning 10001; the release ran 301 joint iterations per round, bug 9.3.2: the one
deliberate difference from the release); ``demo`` = a few minutes on 2 CPU cores (see ``PRESETS``).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from common.atomic import atomic_write_json, atomic_write_text
from common.errors import InputError
from evaluation.methods import LABELS, classify
from training import flags as stage_flags
from training import registry
from workdir import read_config, read_eval_summary, read_summary

ROOT = Path(__file__).resolve().parent.parent
_PRETRAIN, _SELFTRAIN = stage_flags.SCRIPT_DEFAULTS["pretrain"], stage_flags.SCRIPT_DEFAULTS["selftrain"]

PRESETS: dict[str, dict[str, int]] = {
    # The paper's text: 5001 baseline iterations, 3 rounds x 5000 joint iterations (the release: 301 per
    # round, bug 9.3.2), 10001 pre-training iterations per stage, 10001 fine-tuning iterations.
    "paper": {"baseline_iters": _SELFTRAIN["n_iter"], "joint_rounds": _SELFTRAIN["rounds"],
              "joint_iters_per_round": _SELFTRAIN["n_iter_per_round"], "pretrain_iters": _PRETRAIN["n_iter"],
              "finetune_iters": 10001, "val_every": stage_flags.COMMON_DEFAULTS["val_every"], "ckpt_every": 500},
    # demo: sized by measurement to fit 10 minutes with setup on 2 AVX-512 CPU cores (README "Quick start").
    "demo": {"baseline_iters": 150, "joint_rounds": 2, "joint_iters_per_round": 60,
             "pretrain_iters": 100, "finetune_iters": 150, "val_every": 20, "ckpt_every": 100},
}
# In the order of the MedIA 2023 table's rows; plc_plus (the port's variant) last.
METHODS = ("baseline", "gcl_lcl", "selftrain_gcl_lcl", "plc_gcl_lcl", "plc_intra", "plc", "plc_plus")
# The release's joint stage (ORIGINAL_SPEC §4.3): fresh head / BN statistics / Adam in round 0, the round
# keeps its best even below its start, the per-pair weighting of the released loss (bug 9.3.1: the
# paper's lamda_local = 0.1 was chosen with it); the CRF is --crf of the pipeline (on by default).
RELEASE_JOINT_FLAGS = ("--plc_warm_start=false", "--plc_round_floor=false", "--replicate_plc_loss_weighting=true")
# The port's variant plc_plus: round 0 continues the baseline, rounds never end below their start, no CRF,
# the mean over pairs (the stage scripts' default fix of 9.3.1).
PLUS_JOINT_FLAGS = ("--plc_warm_start=true", "--plc_round_floor=true", "--replicate_plc_loss_weighting=false",
                    "--crf=false")
# The model exported by --export_dir: the first of these that ran.
EXPORT_ORDER = ("plc", "plc_plus", "plc_intra", "plc_gcl_lcl", "selftrain_gcl_lcl", "gcl_lcl", "baseline")
# ``make demo`` as measured (in-process stages, synthetic data made and preprocessed, baseline and PLC,
# two evaluations, export; setup excluded) on the machine named here, with its fp32 matmul peak
# (``bench.matmul``); :func:`demo_estimate` scales it to another machine by the peak ratio.
# 231 s were measured there for baseline + one PLC stage; the PLC+ stages (a pseudo-label pass without the
# CRF, 120 joint iterations at the 0.53 s 64x64 joint step measured there, its validations and round-1
# labels, one more evaluation) add about 85 s: derived, not a measured run of today's demo.
DEMO_REFERENCE = {"seconds": 316.0, "matmul_gflops": 180.0, "machine": "AMD EPYC (AVX-512, AVX512_BF16), 2 cores",
                  "basis": "derived from a measured run"}
DEMO_BUDGET_S = 600.0  # the demo's promise, setup included (README)
DEMO_SETUP_S = 110.0  # make setup from a fresh clone on that machine (pip install, measured)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What ``run_pipeline.py`` resolves its flags to (iteration settings from a preset).

    Attributes:
        dataset, data_dir, out_dir, no_of_tr_imgs, comb_tr_imgs, seed: as the stage flags.
        methods: methods to run, a subset of ``METHODS``.
        baseline_iters, joint_rounds, joint_iters_per_round, pretrain_iters, finetune_iters,
            val_every, ckpt_every: the iteration settings of ``PRESETS``.
        crf: dense-CRF refinement of the release methods' pseudo-labels (the release: on;
            ``plc_plus`` never uses it).
        export_dir: export a model as a SavedModel here (the first of :data:`EXPORT_ORDER` that ran;
            None: no export).
        extra: flags passed to every training stage whose script defines them.
        allow_missing: evaluate the test volumes the data dir holds when some are absent
            (``evaluate.py --allow_missing``; e.g. patient 090 of the originals' cropped ACDC copy).
        in_process: run the stages and evaluations in this process (one TensorFlow start instead
            of one per stage: ~5-10 s saved per stage on 2 CPU cores) instead of as subprocesses.
        pretrain_dir: where the GCL / LCL pre-training workdirs go (default ``out_dir``); they do not
            depend on the labeled set, so the label combinations of one seed can share them.
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
    crf: bool = True
    export_dir: str | None = None
    extra: tuple[str, ...] = ()
    in_process: bool = False
    allow_missing: bool = False
    pretrain_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage of a pipeline.

    Attributes:
        title: what the log calls it.
        workdir: its workdir.
        script: ``train_pretrain.py`` or ``train_selftrain.py``.
        args: its flags (``--name=value``).
        sources: workdirs of the stages it is made from.
        kind: ``supervised`` (20-image steps), ``joint`` (40-image steps), ``global``, ``local`` or
            ``pseudolabel`` (no training steps).
        iterations: training iterations of a finished run (0 for ``pseudolabel``).
    """

    title: str
    workdir: Path
    script: str
    args: tuple[str, ...]
    sources: tuple[Path, ...]
    kind: str
    iterations: int

    def command(self) -> list[str]:
        return [sys.executable, self.script, *self.args]

    def config(self) -> Any:
        """The typed config the script parses its flags to (no TensorFlow start)."""
        return stage_flags.parse_config(registry.BY_SCRIPT[self.script].name, list(self.args))


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
            f"({ref.get('basis', 'measured')} {float(ref['seconds']) / 60:.1f} min on {ref['machine']}, "
            f"{ref['matmul_gflops']:.0f} GFLOP/s)")
    if total > budget_s:
        note += (f"; this machine is slower than the demo preset assumes: expect about {total / 60:.0f} min "
                 f"with setup instead of <= {budget_s / 60:.0f}")
    return est, note


def make_options(preset: str, overrides: dict[str, Any], **settings: Any) -> PipelineOptions:
    """``PRESETS[preset]`` with the non-None ``overrides`` applied, plus the other ``settings``.

    Raises:
        InputError: unknown method, or an ``--extra`` flag that no stage script defines.
    """
    bad = [m for m in settings.get("methods", ()) if m not in METHODS]
    if bad:
        raise InputError(f"--methods: unknown {bad}; valid: {','.join(METHODS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    values.update({k: (bool(v) if k == "crf" else int(v)) for k, v in overrides.items() if v is not None})
    values.update(settings)
    values["methods"] = tuple(values["methods"])
    values["extra"] = tuple(values.get("extra", ()))
    for arg in values["extra"]:
        if not _scripts_defining(arg):
            raise InputError(f"--extra={arg}: no stage script defines this flag")
    return PipelineOptions(**values)


def _flag_name(arg: str) -> str:
    """``--name=value`` / ``--name`` / ``--noname`` -> ``name`` (as absl reads a boolean)."""
    name = arg.lstrip("-").split("=", 1)[0]
    defined = {n for f in registry.FAMILIES for n in stage_flags.SCRIPT_DEFAULTS[f]}
    if name not in defined and name.startswith("no") and name[2:] in defined:
        return name[2:]
    return name


def _scripts_defining(arg: str) -> list[str]:
    """The stage scripts (``train_pretrain.py``, ``train_selftrain.py``) that define ``arg``'s flag."""
    name = _flag_name(arg)
    return [f.script for f in registry.FAMILIES.values() if name in stage_flags.SCRIPT_DEFAULTS[f.name]]


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


def _run(cmd: Sequence[str], log_prefix: str, in_process: Callable[[], Any] | None = None) -> None:
    """Run ``cmd`` as a subprocess, or call ``in_process`` (the library call its script makes)."""
    print(f"\n=== {log_prefix}: {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    if in_process is not None:
        from absl import logging

        logging.set_verbosity(logging.WARNING)  # as the scripts' own main does
        in_process()
        sys.stdout.flush()
    else:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(list(cmd), cwd=str(ROOT), env=env)
        if proc.returncode != 0:
            raise InputError(f"{log_prefix} failed with exit status {proc.returncode} (command above)")
    print(f"=== {log_prefix}: done in {time.time() - t0:.0f}s", flush=True)


def _stage_in_process(stage: Stage) -> Callable[[], Any]:
    def call() -> None:
        from training.engine.strategy import configure_devices

        conf = stage.config()
        configure_devices(conf.num_replicas)
        stage_flags.run_and_report(conf)
    return call


# Settings whose change lets a stage continue in its workdir (more iterations resume it) or that do not
# change what it computes; any other setting of a stage's command must equal its config.json value.
CONTINUE_KEYS = ("n_iter", "rounds", "n_iter_per_round", "max_steps", "val_every", "ckpt_every", "log_every",
                 "jit_compile", "crf_workers", "override_config")
# Paths that name the stage's place in this out_dir (the workdir and the stages before it).
PLACE_KEYS = ("workdir", "init_from", "pseudo_label_dir")


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, (bool, int, float)) and isinstance(new, (bool, int, float)):
        return old == new
    return str(old) == str(new)


def _check_settings(stage: Stage) -> None:
    """Refuse a workdir whose ``config.json`` was made with other settings than the stage's command.

    A stage rerun there would resume (or reuse) the old run and report it under the new settings.
    Every setting the command resolves to (its flags and the script's defaults) is compared, so
    ``--noflag``, ``--flag`` and ``--flag=false`` read alike.

    Raises:
        InputError: differing settings (each named with both values), or an unreadable config.json.
    """
    path = stage.workdir / "config.json"
    if not path.exists():
        return  # nothing ran there yet
    conf = read_config(stage.workdir)  # InputError when unreadable: never silently run over it
    new = stage.config().to_json()
    diffs = [(k, conf[k], v) for k, v in new.items()
             if k not in CONTINUE_KEYS + PLACE_KEYS and k in conf and not _same(conf[k], v)]
    if diffs:
        desc = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diffs)
        raise InputError(f"{stage.workdir}: holds a run with other settings ({desc}); use another --out_dir or "
                         f"delete {stage.workdir}")


def _expected_step(stage: Stage) -> int | None:
    """Final step of a finished run of a training stage (None: the stage has no steps)."""
    if stage.kind == "pseudolabel":
        return None
    conf = stage.config()
    return conf.joint_end_step if conf.stage == "joint" else conf.end_step


def plan_stages(opts: PipelineOptions) -> tuple[list[Stage], dict[str, Path]]:
    """The training stages the requested methods need, in running order, and each method's workdir.

    Pure (reads and runs nothing): ``--dry_run`` prints it, :func:`run_pipeline` runs it.
    """
    out = Path(opts.out_dir)
    methods = set(opts.methods)
    common = (f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
              f"--val_every={opts.val_every}", f"--ckpt_every={opts.ckpt_every}")
    split = (f"--no_of_tr_imgs={opts.no_of_tr_imgs}", f"--comb_tr_imgs={opts.comb_tr_imgs}")
    stages: dict[Path, Stage] = {}
    workdirs: dict[str, Path] = {}

    def add(title: str, name: str, script: str, args: Sequence[str], sources: Sequence[Path], kind: str,
            iterations: int) -> Path:
        wd = (Path(opts.pretrain_dir) if opts.pretrain_dir and kind in ("global", "local") else out) / name
        extra = tuple(a for a in opts.extra if script in _scripts_defining(a))
        stages.setdefault(wd, Stage(title, wd, script, (f"--workdir={wd}", *args, *extra), tuple(sources),
                                    kind, iterations))
        return wd

    def selftrain(stage: str, name: str, args: Sequence[str], sources: Sequence[Path], kind: str,
                  iterations: int, title: str | None = None) -> Path:
        return add(title or stage, name, registry.family_of(stage).script,
                   (f"--stage={stage}", *args, *common, *split), sources, kind, iterations)

    def baseline() -> Path:
        return selftrain("baseline", "baseline", [f"--n_iter={opts.baseline_iters}"], (), "supervised",
                         opts.baseline_iters)

    def fine_tuned() -> Path:
        pre = (f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
               f"--ckpt_every={opts.ckpt_every}", f"--n_iter={opts.pretrain_iters}")
        wg = add("GCL pre-training", "gcl", registry.family_of("global").script, ("--stage=global", *pre), (),
                 "global", opts.pretrain_iters)
        wl = add("LCL pre-training", "lcl", registry.family_of("local").script,
                 ("--stage=local", f"--init_from={wg}", *pre), (wg,), "local", opts.pretrain_iters)
        return selftrain("baseline", "gcl_lcl_ft", [f"--init_from={wl}", f"--n_iter={opts.finetune_iters}"],
                         (wl,), "supervised", opts.finetune_iters, title="fine-tuning")

    def pseudo_labels(source: Path, prefix: str, crf: bool) -> Path:
        name = f"{prefix}{'' if crf else '_nocrf'}"
        return selftrain("pseudolabel", name, [f"--init_from={source}", f"--crf={str(crf).lower()}"], (source,),
                         "pseudolabel", 0)

    def joint(method: str, source: Path, labels: Path, flags: Sequence[str]) -> Path:
        rounds = (f"--rounds={opts.joint_rounds}", f"--n_iter_per_round={opts.joint_iters_per_round}")
        return selftrain("joint", method, [f"--init_from={source}",
                                           f"--pseudo_label_dir={labels / 'pseudo_labels' / 'round_0'}",
                                           *rounds, *flags], (source, labels), "joint",
                         opts.joint_rounds * opts.joint_iters_per_round, title=f"joint ({method})")

    release = (*RELEASE_JOINT_FLAGS, f"--crf={str(opts.crf).lower()}")
    if "baseline" in methods:
        workdirs["baseline"] = baseline()
    for method, flags in (("plc_intra", ("--local_loss_exp_no=0", *release)),
                          ("plc", ("--local_loss_exp_no=1", *release)),
                          ("plc_plus", ("--local_loss_exp_no=1", *PLUS_JOINT_FLAGS))):
        if method in methods:
            wb = baseline()
            crf = opts.crf if method != "plc_plus" else False
            workdirs[method] = joint(method, wb, pseudo_labels(wb, "pseudolabel", crf), flags)
    if "gcl_lcl" in methods:
        workdirs["gcl_lcl"] = fine_tuned()
    for method, flags in (("selftrain_gcl_lcl", ("--local_loss_exp_no=1", "--lamda_local=0", *release)),
                          ("plc_gcl_lcl", ("--local_loss_exp_no=1", *release))):
        if method in methods:
            wf = fine_tuned()
            workdirs[method] = joint(method, wf, pseudo_labels(wf, "pseudolabel_gcl_lcl", opts.crf), flags)
    # Insertion order is running order: a stage is added after the stages it is made from.
    return list(stages.values()), {m: workdirs[m] for m in METHODS if m in workdirs}


def stage_status(stages: Sequence[Stage]) -> dict[Path, str]:
    """``run``, ``resume`` or ``done`` per workdir, after refusing what must not be reused.

    Raises:
        InputError: a workdir made with other settings (:func:`_check_settings`), or a finished stage
            made from an earlier run of a stage before it that runs again now (its results would be stale).
    """
    status: dict[Path, str] = {}
    for st in stages:
        _check_settings(st)
        if _done(st.workdir, _expected_step(st)):
            rerun = [str(s) for s in st.sources if status.get(s) != "done"]
            if rerun:
                raise InputError(f"{st.workdir}: finished from an earlier run of {', '.join(rerun)}, which runs "
                                 f"again now; delete {st.workdir} (and the stages after it) or use another --out_dir")
            status[st.workdir] = "done"
        else:
            status[st.workdir] = "resume" if (st.workdir / "ckpt").is_dir() else "run"
    return status


def _eval_command(method: str, wd: Path, opts: PipelineOptions, export: str | None,
                  split: str = "test") -> list[str]:
    cmd = [sys.executable, "evaluate.py", f"--workdir={wd}", f"--split={split}"]
    if method == export and opts.export_dir:
        cmd.append(f"--export_dir={opts.export_dir}")
    if opts.allow_missing:
        cmd.append("--allow_missing=true")
    return cmd


def _eval_in_process(wd: Path, opts: PipelineOptions, export_dir: str | None,
                     split: str = "test") -> Callable[[], Any]:
    def call() -> None:
        from evaluation.evaluator import evaluate_model

        evaluate_model(str(wd), workdir=str(wd), split=split, export_dir=export_dir,
                       allow_missing=opts.allow_missing)
    return call


def format_plan(opts: PipelineOptions, stages: Sequence[Stage], status: dict[Path, str],
                workdirs: dict[str, Path]) -> str:
    """What ``--dry_run`` prints: every command, what it would do, the iteration totals."""
    export = next((m for m in EXPORT_ORDER if m in workdirs), None)
    lines = [f"# dry run: {len(stages)} training stages, {len(workdirs)} evaluations; nothing is run"]
    for st in stages:
        lines.append(f"# {st.title} [{status[st.workdir]}; {st.iterations} iterations, {st.kind} steps]")
        lines.append(shlex.join(st.command()))
    for method, wd in workdirs.items():
        lines.append(f"# evaluate {method}: {LABELS[method]}")
        lines.append(shlex.join(_eval_command(method, wd, opts, export)))
    totals = iteration_totals(stages, status)
    lines.append("# iterations to run, by step kind: " + (", ".join(f"{k} {v}" for k, v in totals.items())
                                                          or "none (every stage is finished)"))
    return "\n".join(lines)


def iteration_totals(stages: Sequence[Stage], status: dict[Path, str] | None = None) -> dict[str, int]:
    """Training iterations per step kind of the stages not yet finished (all of them without ``status``)."""
    totals: dict[str, int] = {}
    for st in stages:
        if st.iterations and (status is None or status[st.workdir] != "done"):
            totals[st.kind] = totals.get(st.kind, 0) + st.iterations
    return totals


def train_methods(opts: PipelineOptions) -> dict[str, Path]:
    """Run (or reuse, or resume) every training stage the methods need; returns ``{method: workdir}``.

    Refused before any stage runs: a workdir made with other settings (``_check_settings``), and a
    finished stage made from an earlier run of a stage before it that runs again now.
    """
    if opts.in_process and os.environ.get("TF_CONFIG"):
        raise InputError("--in_process: not with TF_CONFIG (a multi-worker strategy can be made once per "
                         "process); run the stages as subprocesses")
    stages, workdirs = plan_stages(opts)
    status = stage_status(stages)
    Path(opts.out_dir).mkdir(parents=True, exist_ok=True)
    for st in stages:
        if status[st.workdir] != "done":
            _run(st.command(), st.title, _stage_in_process(st) if opts.in_process else None)
    return workdirs


def evaluate_methods(opts: PipelineOptions, workdirs: dict[str, Path], split: str = "test",
                     export: bool = True) -> dict[str, Any]:
    """``evaluate.py --split split`` of every method's workdir; returns ``{method: summary}``.

    The test split also exports (``opts.export_dir``, when ``export``); ``val`` writes
    ``<workdir>/eval_val`` and exports nothing.
    """
    chosen = next((m for m in EXPORT_ORDER if m in workdirs), None) if export and split == "test" else None
    results: dict[str, Any] = {}
    for method, wd in workdirs.items():
        cmd = _eval_command(method, wd, opts, chosen, split)
        export_dir = opts.export_dir if method == chosen else None
        _run(cmd, f"evaluate {method} ({split})",
             _eval_in_process(wd, opts, export_dir, split) if opts.in_process else None)
        results[method] = read_eval_summary(wd / f"eval_{split}")
    return results


def run_pipeline(opts: PipelineOptions, dry_run: bool = False) -> dict[str, Any]:
    """Run the requested methods (:func:`train_methods`), evaluate them on the test volumes and print
    and write the results table; returns ``{method: eval summary dict}``.

    A stage whose workdir holds a finished run with the same settings is reused, an unfinished one
    (or one asked for more iterations) runs again and resumes. With ``dry_run`` the plan is printed
    (:func:`format_plan`) and nothing runs or is written.
    """
    out = Path(opts.out_dir)
    if dry_run:
        stages, workdirs = plan_stages(opts)
        print(format_plan(opts, stages, stage_status(stages), workdirs), flush=True)
        return {}
    t_start = time.time()
    workdirs = train_methods(opts)
    if os.environ.get("TF_CONFIG"):
        from training.engine.strategy import tf_config_is_chief

        if not tf_config_is_chief():  # multi-worker: one evaluation, one export, by the chief
            print("\ntraining done on this worker; the chief evaluates and exports", flush=True)
            return {}
    results = evaluate_methods(opts, workdirs)
    notes = {m: kept_start_note(wd) for m, wd in workdirs.items()}
    labels = {m: run_label(wd, m) for m, wd in workdirs.items()}
    table = format_results(results, labels, {m: n for m, n in notes.items() if n})
    print("\n" + table, flush=True)
    print(f"(total {time.time() - t_start:.0f}s; workdirs under {out})", flush=True)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", {m: {"workdir": str(workdirs[m]), "label": labels[m],
                                                 "note": notes[m], "summary": s} for m, s in results.items()})
    return results


def run_label(workdir: Path, method: str) -> str:
    """The label of what ran in ``workdir`` (:mod:`evaluation.methods`), the method's name as a fallback."""
    try:
        return classify(read_config(workdir)).label
    except InputError:
        return LABELS.get(method, method)


def kept_start_note(workdir: Path) -> str:
    """What a reader of the results table must know about a joint stage ('' for nothing): that its kept
    model is the one a round started from, or that most of its iterations were skipped."""
    try:
        summary = read_summary(workdir) or {}
    except InputError:
        return ""
    notes = []
    steps, skipped = int(summary.get("step") or 0), int(summary.get("skipped") or 0)
    if steps and skipped * 2 > steps:
        notes.append(f"{skipped} of its {steps} iterations were skipped (no sampled unit had every class in the "
                     "labels and pseudo-labels: the pseudo-labels lack structures), so it barely trained")
    r = summary.get("kept_round_start")
    if r is not None:
        what = ("the baseline's model: every round kept the model it started from and round 0 started from the "
                "baseline (--plc_warm_start), so this row scores the baseline's weights"
                if summary.get("kept_baseline") else f"the model round {int(r)} started from")
        notes.append(f"kept {what}; no later validation beat its validation Dice "
                     f"{float(summary.get('best_val_dice', float('nan'))):.4f}")
    return "; ".join(notes)


def format_results(results: dict[str, Any], labels: dict[str, str] | None = None,
                   notes: dict[str, str] | None = None) -> str:
    """Markdown table of test Dice (mean ± std over volumes) per structure and method.

    Args:
        results: ``{method: evaluate.py summary}``.
        labels: ``{method: label}`` (what ran; default: :data:`evaluation.methods.LABELS`).
        notes: ``{method: note}`` printed under the table (e.g. a joint stage that kept its start).
    """
    if not results:
        return "(no results)"
    labels, notes = labels or {}, notes or {}
    first = next(iter(results.values()))
    structs = list(first["structures"])
    lines = ["| method | " + " | ".join(structs) + " | mean |",
             "|---|" + "---|" * (len(structs) + 1)]
    for method, summ in results.items():
        cells = []
        for s in structs + ["mean"]:
            stat = summ["overall"]["dice"] if s == "mean" else summ["structures"][s]["dice"]
            cells.append("n/a" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}")
        lines.append(f"| {labels.get(method) or LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    n = first.get("n_volumes")
    text = (f"Test Dice per structure ({n} test volumes, native resolution, mean ± std over volumes)\n"
            + "\n".join(lines))
    for method, note in notes.items():
        text += f"\nNote, {labels.get(method) or LABELS.get(method, method)}: {note}."
    return text
