"""Every script's flags, parsed by the script itself (its own definitions, absl parsing, its main),
reach the configuration or the arguments it hands on: ``train_pretrain.py`` and
``train_selftrain.py`` for each stage (the configuration the stage function receives),
``evaluate.py`` and ``predict.py`` (the arguments of the evaluation / segmentation / export
calls). ``run_pipeline.py``: tests/test_pipeline_runner.py. A flag that is added, renamed or no
longer handed on fails here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import _eval_data as ed
from tests._scripts import STAGE_FUNCTIONS, argv_for, flag_value, other_value, run_script, script_flags, stage_config

STAGES = list(STAGE_FUNCTIONS)

# Defaults as README.md documents them ("Flags").
COMMON = dict(dataset="acdc", init_from=None, max_steps=0, seed=0, jit_compile="auto", num_replicas=1,
              precision="fp32", val_every=50, ckpt_every=100, log_every=10, ver=0, override_config=False)
DEFAULTS = {
    "train_selftrain.py": dict(
        COMMON, n_iter=5001, no_of_tr_imgs="tr2", comb_tr_imgs="c1", lr_seg=1e-3, dsc_loss=2, data_aug=1,
        rd_en=1, ri_en=0, sigma=5.0, batch_size=20, crf=True, test_aug_overlap=0, test_f1_threshold=0.9,
        crf_workers=0, rounds=3, n_iter_per_round=5000, lamda_local=0.1, temp_fac=0.1, no_of_pos_eles=3,
        no_of_neg_eles=3, bt_size=10, local_loss_exp_no=1, replicate_plc_loss_weighting=False,
        plc_global_best=False, plc_warm_start=False, plc_round_floor=False, pseudo_label_dir=None, bbox_dim=150),
    "train_pretrain.py": dict(
        COMMON, n_iter=10001, no_of_tr_imgs=None, comb_tr_imgs="c1", lr_reg=1e-3, temp_fac=0.1, bt_size=12,
        global_loss_exp_no=2, n_parts=4, bbox_dim=100, replicate_gd_zero_block=False, local_loss_exp_no=0,
        no_of_decoder_blocks=3, local_reg_size=1, no_of_local_regions=13, no_of_neg_local_regions=5, wgt_en=1),
}
REQUIRED = ("stage", "data_dir", "workdir")
# Original flags the scripts accept and do not use (README: "accepted for compatibility"); they are
# parsed but need not reach the configuration.
ACCEPTED_UNUSED = {"train_selftrain.py": {"bbox_dim", "no_of_neg_eles"}, "train_pretrain.py": set()}

# The library calls evaluate.py and predict.py hand their arguments to, and the calls those make
# (one place to fix after a move).
EVALUATE_MODEL = ("evaluation.evaluator", "evaluate_model")
EVALUATE_CALLS = {"evaluate": ("evaluation.evaluator", "run_evaluation"),
                  "export": ("evaluation.export", "export_saved_model")}
PREDICT_PATHS = ("evaluation.segment", "predict_paths")
PREDICT_CALL = ("evaluation.segment", "segment_file")


def _spy(monkeypatch, module: str, name: str, result=None) -> list:
    """Replace ``module.name`` by a recorder of its ``(args, kwargs)``; returns the record list."""
    import importlib

    calls: list = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result(*args, **kwargs) if callable(result) else result

    monkeypatch.setattr(importlib.import_module(module), name, record)
    return calls


@pytest.mark.parametrize("stage", STAGES)
def test_every_flag_of_a_stage_script_reaches_the_stage_config(stage):
    script = STAGE_FUNCTIONS[stage][0]
    values = {name: other_value(flag) for name, flag in script_flags(script).items() if name != "stage"}
    run = run_script(script, [f"--stage={stage}", *argv_for(values)], capture=True, quiet=True)
    assert run.code == 0
    assert [name for name, _ in run.stage_calls] == [STAGE_FUNCTIONS[stage][2]]
    conf = run.stage_calls[0][1]
    assert flag_value(conf, "stage") == stage
    used = {n: v for n, v in values.items() if n not in ACCEPTED_UNUSED[script]}
    wrong = {n: (flag_value(conf, n), v) for n, v in used.items() if flag_value(conf, n) != v}
    assert not wrong, wrong
    assert run.replicas == [values["num_replicas"]]  # --num_replicas configures the devices first


@pytest.mark.parametrize("stage", STAGES)
def test_stage_defaults_are_the_documented_ones(stage):
    script = STAGE_FUNCTIONS[stage][0]
    defaults = DEFAULTS[script]
    assert set(script_flags(script)) == set(defaults) | set(REQUIRED)  # a new flag is documented here
    conf = stage_config(stage, ["--data_dir=d", "--workdir=w"])
    wrong = {n: (flag_value(conf, n), v) for n, v in defaults.items()
             if n not in ACCEPTED_UNUSED[script] and flag_value(conf, n) != v}
    assert not wrong, wrong
    assert (flag_value(conf, "data_dir"), flag_value(conf, "workdir")) == ("d", "w")


@pytest.mark.parametrize("argv, message", [
    (["--stage=baseline", "--data_dir=d"], "--workdir"),
    (["--data_dir=d", "--workdir=w"], "--stage"),
    (["--stage=global", "--data_dir=d", "--workdir=w"], "global"),  # a pre-training stage
])
def test_stage_script_usage_errors(argv, message, capsys):
    run = run_script("train_selftrain.py", argv, capture=True, quiet=True)
    assert run.code == 1 and run.stage_calls == []
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def n4_data(tmp_path_factory) -> Path:
    """A preprocessed data dir whose dataset.json records N4 with shrink factor 2."""
    root = ed.write_preprocessed(tmp_path_factory.mktemp("n4") / "data", ("027", "028"))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(dict(meta, n4=True, n4_shrink=2)))
    return root


def test_evaluate_flags_reach_evaluate_model(monkeypatch, tmp_path):
    calls = _spy(monkeypatch, *EVALUATE_MODEL)
    (tmp_path / "wd").mkdir()
    (tmp_path / "m.weights.h5").write_bytes(b"")
    values = dict(workdir=tmp_path / "wd", model=tmp_path / "m.weights.h5", data_dir=tmp_path / "d",
                  dataset="synthetic", split="val", no_of_tr_imgs="tr2", comb_tr_imgs="c2", ids=["028", "027"],
                  out_dir=tmp_path / "out", export_dir=tmp_path / "exp", num_plot_volumes=1, write_predictions=False,
                  allow_missing=True, precision="mixed_bfloat16")
    assert set(values) == set(script_flags("evaluate.py"))  # every flag covered
    assert run_script("evaluate.py", argv_for(values), quiet=True).code == 0
    (args, kwargs), = calls
    assert args == (str(values.pop("model")),)
    for name, value in values.items():
        got = list(kwargs[name]) if name == "ids" else kwargs[name]
        assert got == (str(value) if isinstance(value, Path) else value), name


def test_evaluate_flags_reach_the_evaluation_and_export(monkeypatch, tmp_path, n4_data):
    def fake_export(model, export_dir, metadata):  # an export's metadata file, nothing else
        from evaluation.export import METADATA_PATH

        (Path(export_dir) / "1" / METADATA_PATH).parent.mkdir(parents=True)
        (Path(export_dir) / "1" / METADATA_PATH).write_text(json.dumps(metadata))
        return Path(export_dir) / "1"

    calls = {"evaluate": _spy(monkeypatch, *EVALUATE_CALLS["evaluate"], result={}),
             "export": _spy(monkeypatch, *EVALUATE_CALLS["export"], result=fake_export)}
    model = ed.random_unet(9)
    (tmp_path / "m").mkdir()
    model.save_weights(str(tmp_path / "m" / "other.weights.h5"))
    wd = tmp_path / "wd"  # its config.json names another dataset and data dir: the flags win
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps({"stage": "baseline", "dataset": "prostate_md",
                                                "data_dir": str(tmp_path / "nowhere"), "no_of_tr_imgs": "tr1",
                                                "comb_tr_imgs": "c1"}))
    values = dict(workdir=wd, model=tmp_path / "m" / "other.weights.h5", data_dir=n4_data, dataset="synthetic",
                  split="val", no_of_tr_imgs="tr2", comb_tr_imgs="c2", ids=["028", "029", "027"],
                  out_dir=tmp_path / "out", export_dir=tmp_path / "exp", num_plot_volumes=1, write_predictions=False,
                  allow_missing=True)
    assert run_script("evaluate.py", argv_for(values), quiet=True).code == 0

    (args, kwargs), = calls["evaluate"]
    got, data_dir, ids, cfg, out_dir = args
    np.testing.assert_array_equal(got.get_layer("seg_fin_layer").kernel.numpy(),
                                  model.get_layer("seg_fin_layer").kernel.numpy())  # --model, not the workdir
    assert (str(data_dir), list(ids), cfg.name, str(out_dir)) == (str(n4_data), ["028", "027"], "synthetic",
                                                                  str(tmp_path / "out"))
    assert kwargs["num_plot_volumes"] == 1 and kwargs["write_predictions"] is False
    assert str(kwargs["workdir"]) == str(wd)
    extra = kwargs["extra"]
    assert (extra["split"], extra["no_of_tr_imgs"], extra["comb_tr_imgs"], extra["dataset"]) == (
        "val", "tr2", "c2", "synthetic")
    assert extra["model"] == str(tmp_path / "m" / "other.weights.h5") and extra["data_dir"] == str(n4_data)
    assert extra["missing_ids"] == ["029"]  # --allow_missing: absent from the data dir, left out
    (args, kwargs), = calls["export"]
    assert args[0] is got and str(args[1]) == str(tmp_path / "exp")
    meta = args[2]
    assert meta["dataset"] == "synthetic" and (meta["n4"], meta["n4_shrink"]) == (True, 2)


@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory, n4_data):
    root = tmp_path_factory.mktemp("predict")
    model = ed.random_unet(4)
    wd = ed.write_workdir(root / "wd", model, n4_data)
    (root / "scans").mkdir()
    for k in range(2):
        ed.write_raw(root / "scans" / f"s{k}.nii.gz", seed=k)
    return root, wd, model


def _predict(monkeypatch, argv):
    calls = _spy(monkeypatch, *PREDICT_CALL, result=lambda *a, **k: np.zeros((4, 4, 2), np.int16))
    assert run_script("predict.py", argv, quiet=True).code == 0
    return calls


def test_predict_flags_reach_predict_paths(monkeypatch, tmp_path):
    calls = _spy(monkeypatch, *PREDICT_PATHS, result=[])
    values = dict(model=tmp_path / "m", input=tmp_path / "in", output=tmp_path / "out", dataset="acdc",
                  data_dir=tmp_path / "d", n4="false", channel=1, precision="mixed_bfloat16")
    assert set(values) == set(script_flags("predict.py"))  # every flag covered
    assert run_script("predict.py", argv_for(values), quiet=True).code == 0
    (args, kwargs), = calls
    got = dict(zip(("model_path", "input_path", "output_path"), args), **kwargs)
    assert (str(got["model_path"]), str(got["input_path"]), str(got["output_path"])) == (
        str(tmp_path / "m"), str(tmp_path / "in"), str(tmp_path / "out"))
    assert (got["dataset"], str(got["data_dir"]), got["n4"], got["channel"], got["precision"]) == (
        "acdc", str(tmp_path / "d"), "false", 1, "mixed_bfloat16")


def test_predict_hands_the_segmentation_its_settings(monkeypatch, predict_setup):
    root, wd, model = predict_setup
    values = dict(model=wd, input=root / "scans", output=root / "segs", dataset="acdc", n4="false", channel=0)
    calls = _predict(monkeypatch, argv_for(values))
    assert [(str(a[2]), str(a[3])) for a, _ in calls] == [
        (str(root / "scans" / f"s{k}.nii.gz"), str(root / "segs" / f"s{k}.nii.gz")) for k in range(2)]
    for args, kwargs in calls:
        assert args[1].name == "acdc" and kwargs["n4"] is False and kwargs["channel"] == 0
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    import tensorflow as tf

    np.testing.assert_allclose(calls[0][0][0](x), tf.nn.softmax(model(x, training=False)).numpy(), atol=1e-5)


def test_predict_runs_n4_as_the_training_data(monkeypatch, predict_setup, n4_data):
    """--n4 auto: N4 with the shrink factor recorded at preprocessing (2 here); --n4 true on a
    model whose data had no N4: N4 at full resolution (shrink 1)."""
    root, wd, _ = predict_setup
    argv = [f"--model={wd}", f"--input={root / 'scans' / 's0.nii.gz'}", f"--output={root / 'o.nii.gz'}"]
    (args, kwargs), = _predict(monkeypatch, argv)
    assert args[1].name == "synthetic" and kwargs["channel"] is None  # dataset from the workdir config
    assert (kwargs["n4"], kwargs["n4_shrink"]) == (True, 2)
    meta = json.loads((n4_data / "dataset.json").read_text())
    try:
        (n4_data / "dataset.json").write_text(json.dumps(dict(meta, n4=False, n4_shrink=None)))
        (args, kwargs), = _predict(monkeypatch, argv + ["--n4=true"])
        assert (kwargs["n4"], kwargs["n4_shrink"]) == (True, 1)
    finally:
        (n4_data / "dataset.json").write_text(json.dumps(meta))
