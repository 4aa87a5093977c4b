"""The pipeline runner (``run_pipeline.py``) through its real flags, with the stage processes
replaced by a fake that records each command and writes what a finished stage leaves behind
(``config.json`` with the flags it got, ``summary.json``; ``eval_test/summary.json`` for
evaluate.py): the exact commands of every preset and method, the stage order, the flags handed on,
which finished stages are reused, and the refusals."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._scripts import ROOT, run_script, script_flags

PY = sys.executable
_REAL_RUN = subprocess.run
# The presets as documented (README "Reproducing the papers", make demo).
PRESETS = {
    "paper": dict(baseline_iters=5001, joint_rounds=3, joint_iters_per_round=5000, pretrain_iters=10001,
                  finetune_iters=10001, val_every=50, ckpt_every=500, crf=True),
    "demo": dict(baseline_iters=150, joint_rounds=2, joint_iters_per_round=60, pretrain_iters=100,
                 finetune_iters=150, val_every=20, ckpt_every=100, crf=True),
}


def _typed(text: str):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flags(args: list[str]) -> dict:
    out = {}
    for a in args:
        assert a.startswith("--") and "=" in a, a
        name, value = a[2:].split("=", 1)
        out[name] = _typed(value)
    return out


class FakeStages:
    """Stands in for ``subprocess.run`` of the stage scripts and evaluate.py."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.cwds: list[str] = []
        self.envs: list[dict] = []
        self.fail = fail or {}

    def __call__(self, cmd, cwd=None, env=None, **kw):
        cmd = list(cmd)
        if len(cmd) < 2 or not str(cmd[1]).endswith(".py"):  # not a stage (e.g. `uname` at a TF import)
            return _REAL_RUN(cmd, cwd=cwd, env=env, **kw)
        self.calls.append(cmd)
        self.cwds.append(str(cwd))
        self.envs.append(dict(env or {}))
        fl = _flags(cmd[2:])
        label = "evaluate" if cmd[1] == "evaluate.py" else fl["stage"]
        code = self.fail.get(label, 0)
        if code:
            return subprocess.CompletedProcess(cmd, code)
        wd = Path(fl["workdir"])
        if label == "evaluate":
            stat = {"mean": 0.5, "std": 0.1, "n": 2, "n_inf": 0}
            (wd / "eval_test").mkdir(parents=True, exist_ok=True)
            (wd / "eval_test" / "summary.json").write_text(json.dumps(
                {"n_volumes": 2, "structures": {"rv": {"dice": stat}}, "overall": {"dice": stat}}))
            return subprocess.CompletedProcess(cmd, 0)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "config.json").write_text(json.dumps(fl))
        summary = {"stage": label}
        if label != "pseudolabel":
            total = fl["rounds"] * fl["n_iter_per_round"] if label == "joint" else fl["n_iter"]
            summary["step"] = min(total, fl["max_steps"]) if fl.get("max_steps") else total
        (wd / "summary.json").write_text(json.dumps(summary))
        return subprocess.CompletedProcess(cmd, 0)

    def stages(self) -> list[str]:
        return [("evaluate:" + Path(_flags(c[2:])["workdir"]).name) if c[1] == "evaluate.py"
                else _flags(c[2:])["stage"] for c in self.calls]


@pytest.fixture(autouse=True)
def _fixed_matmul_peak(monkeypatch):
    """The demo's speed note times a matmul (~1 s): a fixed 60 GFLOP/s here."""
    from bench import matmul

    monkeypatch.setattr(matmul, "matmul_peak_gflops", lambda **kw: {"gflops": 60.0})


def test_demo_estimate_scales_by_the_matmul_peak():
    from training.pipeline import DEMO_SETUP_S, demo_estimate

    ref = {"seconds": 240.0, "matmul_gflops": 180.0, "machine": "M"}
    est, note = demo_estimate(180.0, ref)
    assert est == 240.0 and "slower" not in note and "4.0 min" in note
    est, note = demo_estimate(60.0, ref)  # 3x slower machine: 12 min + setup > 10 min
    assert est == pytest.approx(720.0)
    assert "slower than the demo preset assumes" in note and f"{(720 + DEMO_SETUP_S) / 60:.0f} min" in note


def test_demo_preset_prints_the_speed_note(fake, tmp_path, capsys):
    args = [f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}", "--methods=baseline"]
    assert run_script("run_pipeline.py", [*args, "--preset=demo"]).code == 0
    assert "this machine: 60 GFLOP/s fp32 matmul; the demo should take about" in capsys.readouterr().out
    assert run_script("run_pipeline.py", [*args, "--preset=paper"]).code == 0
    assert "GFLOP/s" not in capsys.readouterr().out


@pytest.fixture
def fake(monkeypatch):
    stages = FakeStages()
    monkeypatch.setattr(subprocess, "run", stages)
    return stages


RELEASE = ["--plc_warm_start=false", "--plc_round_floor=false", "--replicate_plc_loss_weighting=true"]
PLUS = ["--plc_warm_start=true", "--plc_round_floor=true", "--replicate_plc_loss_weighting=false", "--crf=false"]
EVAL_DIRS = {"baseline": "baseline", "gcl_lcl": "gcl_lcl_ft", "selftrain_gcl_lcl": "selftrain_gcl_lcl",
             "plc_gcl_lcl": "plc_gcl_lcl", "plc_intra": "plc_intra", "plc": "plc", "plc_plus": "plc_plus"}


def expected_commands(out: Path, data: Path, methods: list[str], p: dict, *, dataset="synthetic", tr="tr1",
                      comb="c1", seed=0, extra=(), pre_extra=None, export_dir=None, allow_missing=False
                      ) -> list[tuple[str, list[str]]]:
    """(script, sorted flags) of every command, in order, as the README describes the chains."""
    pre_extra = extra if pre_extra is None else pre_extra
    common = [f"--dataset={dataset}", f"--data_dir={data}", f"--seed={seed}", f"--val_every={p['val_every']}",
              f"--ckpt_every={p['ckpt_every']}", *extra]
    split = [f"--no_of_tr_imgs={tr}", f"--comb_tr_imgs={comb}"]
    pre = [f"--dataset={dataset}", f"--data_dir={data}", f"--seed={seed}", f"--ckpt_every={p['ckpt_every']}",
           f"--n_iter={p['pretrain_iters']}", *pre_extra]
    crf = f"--crf={'true' if p['crf'] else 'false'}"
    rounds = [f"--rounds={p['joint_rounds']}", f"--n_iter_per_round={p['joint_iters_per_round']}"]
    cmds, seen = [], set()

    def add(script, args):
        wd = next(a for a in args if a.startswith("--workdir="))
        if wd not in seen:
            seen.add(wd)
            cmds.append((script, args))

    def baseline():
        add("train_selftrain.py", ["--stage=baseline", f"--workdir={out / 'baseline'}",
                                   f"--n_iter={p['baseline_iters']}", *common, *split])

    def pseudo(name, source, crf_flag):
        add("train_selftrain.py", ["--stage=pseudolabel", f"--workdir={out / name}", f"--init_from={out / source}",
                                   crf_flag, *common, *split])

    def joint(name, source, labels, flags):
        add("train_selftrain.py", ["--stage=joint", f"--workdir={out / name}", f"--init_from={out / source}",
                                   f"--pseudo_label_dir={out / labels / 'pseudo_labels' / 'round_0'}", *rounds,
                                   *flags, *common, *split])

    def fine_tuned():
        add("train_pretrain.py", ["--stage=global", f"--workdir={out / 'gcl'}", *pre])
        add("train_pretrain.py", ["--stage=local", f"--workdir={out / 'lcl'}", f"--init_from={out / 'gcl'}", *pre])
        add("train_selftrain.py", ["--stage=baseline", f"--workdir={out / 'gcl_lcl_ft'}",
                                   f"--init_from={out / 'lcl'}", f"--n_iter={p['finetune_iters']}", *common, *split])

    release_labels = "pseudolabel" if p["crf"] else "pseudolabel_nocrf"
    if "baseline" in methods:
        baseline()
    for m, exp in (("plc_intra", 0), ("plc", 1)):
        if m in methods:
            baseline()
            pseudo(release_labels, "baseline", crf)
            joint(m, "baseline", release_labels, [f"--local_loss_exp_no={exp}", *RELEASE, crf])
    if "plc_plus" in methods:
        baseline()
        pseudo("pseudolabel_nocrf", "baseline", "--crf=false")
        joint("plc_plus", "baseline", "pseudolabel_nocrf", ["--local_loss_exp_no=1", *PLUS])
    if "gcl_lcl" in methods:
        fine_tuned()
    gcl_labels = "pseudolabel_gcl_lcl" if p["crf"] else "pseudolabel_gcl_lcl_nocrf"
    for m, flags in (("selftrain_gcl_lcl", ["--lamda_local=0"]), ("plc_gcl_lcl", [])):
        if m in methods:
            fine_tuned()
            pseudo(gcl_labels, "gcl_lcl_ft", crf)
            joint(m, "gcl_lcl_ft", gcl_labels, ["--local_loss_exp_no=1", *flags, *RELEASE, crf])
    evaluated = [m for m in EVAL_DIRS if m in methods]
    export = next((m for m in ("plc", "plc_plus", "plc_intra", "plc_gcl_lcl", "selftrain_gcl_lcl", "gcl_lcl",
                               "baseline") if m in methods), None)
    for m in evaluated:
        args = [f"--workdir={out / EVAL_DIRS[m]}", "--split=test"]
        if m == export and export_dir:
            args.append(f"--export_dir={export_dir}")
        if allow_missing:
            args.append("--allow_missing=true")
        cmds.append(("evaluate.py", args))
    return [(s, sorted(a)) for s, a in cmds]


def _got(fake: FakeStages) -> list[tuple[str, list[str]]]:
    assert all(c[0] == PY for c in fake.calls)  # the same interpreter
    return [(c[1], sorted(c[2:])) for c in fake.calls]


def _pipeline(tmp_path, *args, preset="demo", methods="baseline,plc,gcl_lcl"):
    return run_script("run_pipeline.py", [f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}",
                                          f"--preset={preset}", f"--methods={methods}", *args], quiet=True)


@pytest.mark.parametrize("preset", ["paper", "demo"])
@pytest.mark.parametrize("method", ["baseline", "plc", "gcl_lcl", "plc_intra", "plc_plus", "selftrain_gcl_lcl",
                                    "plc_gcl_lcl"])
def test_commands_of_each_preset_and_method(fake, tmp_path, preset, method):
    run = _pipeline(tmp_path, preset=preset, methods=method)
    assert run.code == 0
    assert _got(fake) == expected_commands(tmp_path / "out", tmp_path / "data", [method], PRESETS[preset])
    assert set(fake.cwds) == {str(ROOT)}  # the scripts are named relative to the repository root
    assert all(e.get("TF_CPP_MIN_LOG_LEVEL") for e in fake.envs)


def test_every_flag_reaches_the_commands(fake, tmp_path, monkeypatch):
    """Every run_pipeline.py flag at a non-default value; relative paths become absolute."""
    monkeypatch.chdir(tmp_path)
    values = dict(baseline_iters=11, joint_rounds=3, joint_iters_per_round=4, pretrain_iters=5,
                  finetune_iters=6, val_every=2, ckpt_every=9, crf=False)
    argv = ["--dataset=acdc", "--data_dir=data", "--out_dir=out", "--no_of_tr_imgs=tr2", "--comb_tr_imgs=c3",
            "--methods=gcl_lcl,plc,baseline", "--preset=demo", "--seed=5", "--export_dir=exp",
            "--extra=--jit_compile=true", "--extra=--ver=1", "--extra=--lr_seg=0.01", "--in_process=false",
            "--allow_missing=true", "--dry_run=false"]
    argv += [f"--{k}={'true' if v is True else 'false' if v is False else v}" for k, v in values.items()]
    assert {a[2:].split("=")[0] for a in argv} == set(script_flags("run_pipeline.py"))  # all flags covered
    run = run_script("run_pipeline.py", argv, quiet=True)
    assert run.code == 0
    assert _got(fake) == expected_commands(
        tmp_path / "out", tmp_path / "data", ["baseline", "plc", "gcl_lcl"], values, dataset="acdc", tr="tr2",
        comb="c3", seed=5, extra=("--jit_compile=true", "--ver=1", "--lr_seg=0.01"),
        pre_extra=("--jit_compile=true", "--ver=1"), export_dir=tmp_path / "exp", allow_missing=True)
    table = (tmp_path / "out" / "results.md").read_text()
    for label in ("Baseline (random init)", "PLC (modified: no CRF)", "GCL+LCL pre-training + fine-tuning"):
        assert f"| {label} |" in table
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["gcl_lcl"]["workdir"] == str(tmp_path / "out" / "gcl_lcl_ft")


def test_in_process_runs_the_commands_library_calls(fake, tmp_path, monkeypatch):
    """--in_process: no subprocess; each stage gets the config its command would parse to, and each
    evaluation the workdir / split / export of its command."""
    from evaluation import evaluator
    from training import flags as stage_flags
    from training.engine import strategy

    confs, evals, devices = [], [], []

    def stage(conf):
        confs.append(conf)
        cmd = [PY, "train_pretrain.py" if conf.stage in ("global", "local") else "train_selftrain.py",
               *(f"--{k}={'true' if v is True else 'false' if v is False else v}"
                 for k, v in dataclasses.asdict(conf).items() if v is not None)]
        fake(cmd)  # writes the same config.json / summary.json as a finished stage
        return {"step": 0}

    def evaluate(model_path, *, workdir, split, export_dir, allow_missing):
        evals.append((model_path, workdir, split, export_dir, allow_missing))
        fake([PY, "evaluate.py", f"--workdir={workdir}", f"--split={split}"])
        return {}

    monkeypatch.setattr(stage_flags, "run_and_report", stage)
    monkeypatch.setattr(evaluator, "evaluate_model", evaluate)
    monkeypatch.setattr(strategy, "configure_devices", lambda n=1: devices.append(n))
    run = _pipeline(tmp_path, "--in_process", f"--export_dir={tmp_path / 'exp'}", "--allow_missing")
    assert run.code == 0
    expected = expected_commands(tmp_path / "out", tmp_path / "data", ["baseline", "plc", "gcl_lcl"],
                                 PRESETS["demo"], export_dir=tmp_path / "exp", allow_missing=True)
    trained = [(s, a) for s, a in expected if s != "evaluate.py"]
    assert [c.stage for c in confs] == [_flags(a)["stage"] for _, a in trained]
    for conf, (script, args) in zip(confs, trained):
        assert conf == stage_flags.parse_config({"train_pretrain.py": "pretrain",
                                                 "train_selftrain.py": "selftrain"}[script], args)
    assert devices == [1] * len(trained)
    out = tmp_path / "out"
    assert evals == [(str(out / w), str(out / w), "test", str(tmp_path / "exp") if w == "plc" else None, True)
                     for w in ("baseline", "gcl_lcl_ft", "plc")]


def test_in_process_is_refused_under_tf_config(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}))
    assert _pipeline(tmp_path, "--in_process").code == 2
    assert fake.calls == []


def test_stage_order_and_reuse_of_finished_stages(fake, tmp_path):
    assert _pipeline(tmp_path).code == 0
    assert fake.stages() == ["baseline", "pseudolabel", "joint", "global", "local", "baseline",
                             "evaluate:baseline", "evaluate:gcl_lcl_ft", "evaluate:plc"]
    fake.calls.clear()
    assert _pipeline(tmp_path).code == 0  # everything finished: only the evaluations run again
    assert fake.stages() == ["evaluate:baseline", "evaluate:gcl_lcl_ft", "evaluate:plc"]
    out = tmp_path / "out"
    (out / "plc" / "summary.json").unlink()  # an interrupted joint stage
    (out / "lcl" / "summary.json").write_text(json.dumps({"step": 20}))  # stopped at step 20
    (out / "gcl_lcl_ft").rename(out / "gone")
    fake.calls.clear()
    assert _pipeline(tmp_path).code == 0
    assert fake.stages() == ["joint", "local", "baseline", "evaluate:baseline", "evaluate:gcl_lcl_ft",
                             "evaluate:plc"]
    fake.calls.clear()
    # Longer joint rounds: only the joint stage runs again (it resumes); the same for fine-tuning.
    assert _pipeline(tmp_path, "--joint_iters_per_round=200", "--finetune_iters=400").code == 0
    assert fake.stages()[:2] == ["joint", "baseline"] and len(fake.calls) == 5


def test_smoke_runs_with_a_step_cap_are_reused(fake, tmp_path):
    assert _pipeline(tmp_path, "--extra=--max_steps=3", methods="plc").code == 0
    fake.calls.clear()
    assert _pipeline(tmp_path, "--extra=--max_steps=3", methods="plc").code == 0
    assert fake.stages() == ["evaluate:plc"]  # only the methods asked for are evaluated


@pytest.mark.parametrize("changed, message", [
    ("--no_of_tr_imgs=tr2", "baseline: holds a run with other settings (no_of_tr_imgs: 'tr1' -> 'tr2')"),
    ("--seed=1", "baseline: holds a run with other settings (seed: 0 -> 1)"),
    ("--crf=false", "plc: holds a run with other settings (crf: True -> False)"),
    ("--extra=--noreplicate_plc_loss_weighting",
     "plc: holds a run with other settings (replicate_plc_loss_weighting: True -> False)"),
    ("--extra=--lr_seg=0.01", "baseline: holds a run with other settings (lr_seg: 0.001 -> 0.01)"),
])
def test_a_workdir_made_with_other_settings_is_refused(fake, tmp_path, capsys, changed, message):
    """Rerunning into the same --out_dir with another labeled set, seed, CRF setting or stage flag
    must not reuse (or resume) the runs made with the old settings: refused before any stage."""
    assert _pipeline(tmp_path, methods="plc").code == 0
    fake.calls.clear()
    # A real stage's config.json holds every flag, also those left at their defaults.
    conf = json.loads((tmp_path / "out" / "baseline" / "config.json").read_text())
    (tmp_path / "out" / "baseline" / "config.json").write_text(json.dumps(dict(conf, lr_seg=0.001)))
    capsys.readouterr()
    assert _pipeline(tmp_path, changed, methods="plc").code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'out'}/") and message in err and "--out_dir" in err
    assert fake.calls == []


def test_later_stages_made_from_an_earlier_run_are_refused(fake, tmp_path, capsys):
    """More baseline iterations retrain the baseline; the pseudo-labels and the PLC model made from
    the old baseline would be reused silently: refused, naming them, before anything runs."""
    assert _pipeline(tmp_path, methods="plc").code == 0
    fake.calls.clear()
    capsys.readouterr()
    assert _pipeline(tmp_path, "--baseline_iters=400", methods="plc").code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{tmp_path / 'out' / 'pseudolabel'}" in err and f"{tmp_path / 'out' / 'baseline'}" in err
    assert fake.calls == []
    assert _pipeline(tmp_path, "--baseline_iters=400", methods="baseline").code == 0  # alone: extended
    assert fake.stages() == ["baseline", "evaluate:baseline"]


def test_a_failing_stage_stops_the_pipeline(monkeypatch, tmp_path, capsys):
    fake = FakeStages(fail={"pseudolabel": 3})
    monkeypatch.setattr(subprocess, "run", fake)
    assert _pipeline(tmp_path).code == 2
    assert fake.stages() == ["baseline", "pseudolabel"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: pseudolabel failed with exit status 3 (command above)"
    assert not (tmp_path / "out" / "results.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["--methods=baseline,foo", "--data_dir=d", "--out_dir=o"], "error: --methods: unknown ['foo']"),
    (["--data_dir=d"], "error: --data_dir and --out_dir are required"),
])
def test_flag_errors(fake, argv, message, capsys):
    assert run_script("run_pipeline.py", argv, quiet=True).code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    assert fake.calls == []
