"""``run_pipeline.py --preset paper`` resolves to the release's behaviour: the full joint (and baseline)
config of the ``plc`` method frozen against the release's values, each citing ORIGINAL_SPEC. A change
of any default of the stage scripts or of the preset fails here: change it only with the spec."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training import pipeline

ROOT = Path(__file__).resolve().parents[1]
# field -> (value of the paper preset's plc joint stage, where it comes from)
JOINT_RELEASE = {
    "stage": ("joint", "§4.3 step 3: prop_method_joint_tr_rand_init.py"),
    "dataset": ("acdc", "§7 --dataset acdc"),
    "no_of_tr_imgs": ("tr1", "the pipeline's labeled set (command line)"),
    "comb_tr_imgs": ("c1", "§7 --comb_tr_imgs c1"),
    "rounds": (3, "§4.3 step 3: max_iter = 3 rounds"),
    "n_iter_per_round": (5000, "§9.3.2: the paper's 5000 (release 301); the one deliberate choice"),
    "n_iter": (5001, "§7 unused by the joint stage (the baseline's --n_iter 5001)"),
    "lr_seg": (1e-3, "§7 --lr_seg 0.001; §2.4 constant"),
    "dsc_loss": (2, "§7 --dsc_loss 2: Dice with background"),
    "data_aug": (1, "§3.4.2 step 7: affine augmentation of the seg batch"),
    "rd_en": (1, "§7 --rd_en 1; §3.4.2 step 7: random deformation"),
    "ri_en": (0, "§9.1.3: the intensity augmentation was never applied"),
    "sigma": (5.0, "§7 --sigma 5"),
    "batch_size": (20, "§3.4.1: mtask_bs = 20 labeled slices"),
    "crf": (True, "§4.3 step 2: dense CRF refinement of every pseudo-label"),
    "test_aug_overlap": (0, "§7 --test_aug_overlap 0"),
    "test_f1_threshold": (0.9, "§7 --test_f1_threshold 0.9"),
    "lamda_local": (0.1, "§7 --lamda_local 0.1"),
    "temp_fac": (0.1, "§7 --temp_fac 0.1"),
    "no_of_pos_eles": (3, "§7 --no_of_pos_eles 3"),
    "bt_size": (10, "§7 --bt_size 10 (must be 10, §9.3.4)"),
    "local_loss_exp_no": (1, "§7 --local_loss_exp_no 1: inter"),
    "replicate_plc_loss_weighting": (True, "§9.3.1: the release's per-pair weighting (lamda_local chosen with it)"),
    "plc_global_best": (False, "§9.3.6: running best reset to the last validation Dice at each round end"),
    "plc_warm_start": (False, "§4.3 round 0: fresh seg head, h head, BN statistics and Adam"),
    "plc_round_floor": (False, "§4.3: the round's best is kept even below its start"),
    "val_every": (50, "§4.3: validation every 50 iterations of the round"),
    "ver": (0, "§7 --ver 0"),
    "seed": (0, "port: the pipeline's --seed"),
    "max_steps": (0, "port: no cap"),
    "jit_compile": ("auto", "port: XLA on GPU, off on CPU"),
    "num_replicas": (1, "port: one replica (§2.5 single GPU)"),
    "precision": ("fp32", "§2: float32 throughout"),
    "log_every": (10, "port: TensorBoard scalar period"),
    "ckpt_every": (500, "port: resumable-checkpoint period of the paper preset"),
    "crf_workers": (0, "port: CRF processes (all cores)"),
    "override_config": (False, "port: a rerun with other settings is refused"),
}
BASELINE_RELEASE = {
    "stage": ("baseline", "§4.1 tr_baseline.py"),
    "n_iter": (5001, "§7 PLC tr_baseline.py --n_iter 5001"),
    "lr_seg": (1e-3, "§7 --lr_seg 0.001"),
    "dsc_loss": (2, "§7 --dsc_loss 2"),
    "data_aug": (1, "§4.1: augmentation_function (affine)"),
    "rd_en": (1, "§7 --rd_en 1"),
    "ri_en": (0, "§9.1.3: never applied"),
    "sigma": (5.0, "§7 --sigma 5"),
    "batch_size": (20, "§4.1: 20 slices per iteration"),
    "val_every": (50, "§4.1: val_step_update = 50"),
    "init_from": (None, "§4.3: rand_init"),
}


def _paper_stages(tmp_path, methods=("plc",)):
    opts = pipeline.make_options("paper", {}, dataset="acdc", data_dir=str(tmp_path / "data"),
                                 out_dir=str(tmp_path / "out"), no_of_tr_imgs="tr1", comb_tr_imgs="c1",
                                 methods=list(methods), seed=0)
    return pipeline.plan_stages(opts)


def test_paper_preset_joint_config_is_the_release(tmp_path):
    stages, _ = _paper_stages(tmp_path)
    joint = [s for s in stages if s.kind == "joint"]
    assert len(joint) == 1
    conf = joint[0].config().to_json()
    places = {"workdir", "init_from", "pseudo_label_dir", "data_dir"}
    assert set(conf) - places == set(JOINT_RELEASE), "a field without a frozen release value"
    for field, (value, source) in JOINT_RELEASE.items():
        assert conf[field] == value, f"{field}: {conf[field]!r}, the release's is {value!r} ({source})"
    out = tmp_path / "out"
    assert conf["init_from"] == str(out / "baseline")
    assert conf["pseudo_label_dir"] == str(out / "pseudolabel" / "pseudo_labels" / "round_0")
    pseudo = [s for s in stages if s.kind == "pseudolabel"]
    assert len(pseudo) == 1 and pseudo[0].config().crf is True  # §4.3 step 2: round-0 labels CRF-refined


def test_paper_preset_baseline_config_is_the_release(tmp_path):
    stages, _ = _paper_stages(tmp_path, methods=("baseline",))
    conf = stages[0].config().to_json()
    for field, (value, source) in BASELINE_RELEASE.items():
        assert conf[field] == value, f"{field}: {conf[field]!r}, the release's is {value!r} ({source})"


def test_stage_script_defaults_are_the_release(tmp_path):
    """The joint stage script on its own: the release's round-0 init, round end and CRF."""
    from training import flags

    conf = flags.default_config("joint")
    assert (conf.plc_warm_start, conf.plc_round_floor, conf.crf, conf.plc_global_best) == (False, False, True, False)
    assert conf.replicate_plc_loss_weighting is False  # the deviation-table fix of 9.3.1 (stage default)


def test_every_method_and_its_settings(tmp_path):
    stages, workdirs = _paper_stages(tmp_path, methods=pipeline.METHODS)
    assert list(workdirs) == list(pipeline.METHODS)
    by_wd = {s.workdir: s for s in stages}
    out = tmp_path / "out"
    joint = {m: by_wd[workdirs[m]].config() for m in ("selftrain_gcl_lcl", "plc_gcl_lcl", "plc_intra", "plc",
                                                      "plc_plus")}
    assert joint["plc_intra"].local_loss_exp_no == 0 and joint["plc"].local_loss_exp_no == 1
    assert joint["selftrain_gcl_lcl"].lamda_local == 0.0 and joint["plc_gcl_lcl"].lamda_local == 0.1
    for m in ("selftrain_gcl_lcl", "plc_gcl_lcl"):
        assert joint[m].init_from == str(out / "gcl_lcl_ft")
    plus = joint["plc_plus"]
    assert (plus.plc_warm_start, plus.plc_round_floor, plus.crf, plus.replicate_plc_loss_weighting) == \
        (True, True, False, False)
    assert plus.pseudo_label_dir == str(out / "pseudolabel_nocrf" / "pseudo_labels" / "round_0")
    for m in ("selftrain_gcl_lcl", "plc_gcl_lcl", "plc_intra", "plc"):
        c = joint[m]
        assert (c.plc_warm_start, c.plc_round_floor, c.crf, c.replicate_plc_loss_weighting) == \
            (False, False, True, True), m
    ft = by_wd[workdirs["gcl_lcl"]].config()
    assert ft.init_from == str(out / "lcl") and ft.n_iter == 10001
    assert [s.kind for s in stages].count("pseudolabel") == 3  # CRF and no-CRF from the baseline, one from GCL+LCL
    assert pipeline.iteration_totals(stages) == {"supervised": 5001 + 10001, "joint": 5 * 15000,
                                                 "global": 10001, "local": 10001}


def test_dry_run_prints_the_release_commands_and_starts_no_tensorflow(tmp_path):
    code = ("import sys, runpy; sys.argv = ['run_pipeline.py', '--preset=paper', '--dataset=acdc', "
            f"'--data_dir={tmp_path / 'd'}', '--out_dir={tmp_path / 'o'}', '--methods=plc,plc_plus', '--dry_run']\n"
            "try:\n    runpy.run_path('run_pipeline.py', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('TF loaded' if 'tensorflow' in sys.modules else 'no TF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "no TF"
    plc = next(ln for ln in lines if f"--workdir={tmp_path / 'o' / 'plc'} " in ln)
    for flag in ("--stage=joint", "--rounds=3", "--n_iter_per_round=5000", "--plc_warm_start=false",
                 "--plc_round_floor=false", "--replicate_plc_loss_weighting=true", "--crf=true"):
        assert flag in plc.split()
    plus = next(ln for ln in lines if f"--workdir={tmp_path / 'o' / 'plc_plus'} " in ln)
    for flag in ("--plc_warm_start=true", "--plc_round_floor=true", "--crf=false"):
        assert flag in plus.split()
    assert "# iterations to run, by step kind: supervised 5001, joint 30000" in proc.stdout
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("arg, scripts", [("--jit_compile=true", 2), ("--noplc_warm_start", 1),
                                          ("--lr_reg=0.01", 1), ("--precision=mixed_bfloat16", 2)])
def test_extra_flags_reach_only_the_scripts_that_define_them(tmp_path, arg, scripts):
    opts = pipeline.make_options("demo", {}, dataset="synthetic", data_dir=str(tmp_path), out_dir=str(tmp_path / "o"),
                                 no_of_tr_imgs="tr1", comb_tr_imgs="c1", methods=["plc", "gcl_lcl"], seed=0,
                                 extra=[arg])
    stages, _ = pipeline.plan_stages(opts)
    got = {s.script for s in stages if arg in s.args}
    assert len(got) == scripts
    for s in stages:
        s.config()  # every stage's flags parse


def test_an_extra_flag_no_script_defines_is_refused(tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match=r"--extra=--nosuch=1: no stage script defines this flag"):
        pipeline.make_options("demo", {}, dataset="synthetic", data_dir=str(tmp_path), out_dir=str(tmp_path),
                              no_of_tr_imgs="tr1", comb_tr_imgs="c1", methods=["plc"], seed=0,
                              extra=["--nosuch=1"])

