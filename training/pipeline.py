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
``results.json``. A stage whose workdir already holds a finished run of the same length is not
rerun; an interrupted one resumes from its checkpoint, so rerunning the same command continues.

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
from workdir import read_config, read_eval_summary, read_summary

ROOT = Path(__file__).resolve().parent.parent

PRESETS: dict[str, dict[str, int]] = {
    "paper": {"baseline_iters": 5001, "joint_rounds": 3, "joint_iters_per_round": 5000,
              "pretrain_iters": 10001, "finetune_iters": 10001, "val_every": 50, "ckpt_every": 500, "crf": 1},
    # The CRF parameters of the originals (pixel units, tuned for ~1.4 mm 192 px MR) erase the weak
    # structures of a briefly trained model on the 64 px, 2.5 mm synthetic images: off in the demo.
    "demo": {"baseline_iters": 300, "joint_rounds": 2, "joint_iters_per_round": 150,
             "pretrain_iters": 150, "finetune_iters": 300, "val_every": 25, "ckpt_every": 100, "crf": 0},
}
METHODS = ("baseline", "plc", "gcl_lcl")


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


def _run(cmd: Sequence[str], log_prefix: str) -> None:
    print(f"\n=== {log_prefix}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(list(cmd), cwd=str(ROOT), env=env)
    if proc.returncode != 0:
        raise InputError(f"{log_prefix} failed with exit status {proc.returncode} (command above)")
    print(f"=== {log_prefix}: done in {time.time() - t0:.0f}s", flush=True)


def run_pipeline(opts: PipelineOptions) -> dict[str, Any]:
    """Run the requested methods; returns ``{method: eval summary dict}``."""
    py = sys.executable
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
              f"--val_every={opts.val_every}", f"--ckpt_every={opts.ckpt_every}"] + list(opts.extra)
    split = [f"--no_of_tr_imgs={opts.no_of_tr_imgs}", f"--comb_tr_imgs={opts.comb_tr_imgs}"]
    methods = list(opts.methods)
    workdirs: dict[str, Path] = {}
    t_start = time.time()

    if "baseline" in methods or "plc" in methods:
        wb = out / "baseline"
        if not _done(wb, opts.baseline_iters):
            _run([py, "train_selftrain.py", "--stage=baseline", f"--workdir={wb}",
                  f"--n_iter={opts.baseline_iters}"] + common + split, "baseline")
        workdirs["baseline"] = wb
    if "plc" in methods:
        wp, wj = out / "pseudolabel", out / "plc"
        crf = f"--crf={'true' if opts.crf else 'false'}"
        if not _done(wp, None, crf=bool(opts.crf), init_from=str(workdirs["baseline"])):
            _run([py, "train_selftrain.py", "--stage=pseudolabel", f"--workdir={wp}",
                  f"--init_from={workdirs['baseline']}", crf] + common + split, "pseudolabel")
        total = opts.joint_rounds * opts.joint_iters_per_round
        if not _done(wj, total, crf=bool(opts.crf)):
            _run([py, "train_selftrain.py", "--stage=joint", f"--workdir={wj}",
                  f"--init_from={workdirs['baseline']}", f"--pseudo_label_dir={wp / 'pseudo_labels' / 'round_0'}",
                  f"--rounds={opts.joint_rounds}", f"--n_iter_per_round={opts.joint_iters_per_round}",
                  crf] + common + split, "joint (PLC)")
        workdirs["plc"] = wj
    if "gcl_lcl" in methods:
        wg, wl, wf = out / "gcl", out / "lcl", out / "gcl_lcl_ft"
        pre = [f"--dataset={opts.dataset}", f"--data_dir={opts.data_dir}", f"--seed={opts.seed}",
               f"--ckpt_every={opts.ckpt_every}", f"--n_iter={opts.pretrain_iters}"] + list(opts.extra)
        if not _done(wg, opts.pretrain_iters):
            _run([py, "train_pretrain.py", "--stage=global", f"--workdir={wg}"] + pre, "GCL pre-training")
        if not _done(wl, opts.pretrain_iters):
            _run([py, "train_pretrain.py", "--stage=local", f"--workdir={wl}", f"--init_from={wg}"] + pre,
                 "LCL pre-training")
        if not _done(wf, opts.finetune_iters):
            _run([py, "train_selftrain.py", "--stage=baseline", f"--workdir={wf}", f"--init_from={wl}",
                  f"--n_iter={opts.finetune_iters}"] + common + split, "fine-tuning")
        workdirs["gcl_lcl"] = wf

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
        _run(cmd, f"evaluate {method}")
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
