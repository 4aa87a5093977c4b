"""Tests for workdir: the files of a stage workdir (config.json, best/, final/, summary.json,
metrics.json, eval summaries), the typed cross-stage reads and the one model loader (workdir,
.weights.h5, training checkpoint, SavedModel)."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import workdir as W
from common.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _config(root: Path, **conf) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(conf))
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------- config.json


def test_config_round_trip_and_shape_check(tmp_path):
    conf = {"stage": "local", "dataset": "synthetic", "num_classes": 4, "no_of_decoder_blocks": 2, "n_iter": 5}
    W.write_or_check_config(tmp_path, conf, ("stage", "num_classes"))
    assert W.read_config(tmp_path) == conf and W.has_config(tmp_path)
    W.write_or_check_config(tmp_path, dict(conf, n_iter=9), ("stage", "num_classes"))  # not a shape key
    assert W.read_config(tmp_path)["n_iter"] == 9
    with pytest.raises(InputError, match=r"different configuration \(num_classes: 4 -> 3\)"):
        W.write_or_check_config(tmp_path, dict(conf, num_classes=3), ("stage", "num_classes"))
    assert W.read_config(tmp_path)["num_classes"] == 4  # refused: nothing written
    W.write_or_check_config(tmp_path / "other", conf, (), is_chief=False)  # only the chief writes
    assert not W.has_config(tmp_path / "other")


def test_a_rerun_with_other_training_settings_is_refused_unless_overridden(tmp_path):
    """Issue 20: only lengths (growing), periods and paths may change in a workdir; any other setting
    is refused with one line naming each setting and both values, unless --override_config, whose
    changes are kept in config_history."""
    conf = {"stage": "baseline", "num_classes": 4, "n_iter": 10, "lr_seg": 1e-3, "crf": False, "seed": 0,
            "precision": "fp32", "num_replicas": 1, "val_every": 5, "data_dir": str(tmp_path / "data"),
            "workdir": "w", "override_config": False}
    keys = ("stage", "num_classes")
    W.write_or_check_config(tmp_path, conf, keys)
    before = (tmp_path / "config.json").read_text()
    for change, text in (({"lr_seg": 0.01, "crf": True}, "lr_seg: 0.001 -> 0.01, crf: False -> True"),
                         ({"precision": "mixed_bfloat16"}, "precision: 'fp32' -> 'mixed_bfloat16'"),
                         ({"num_replicas": 2, "seed": 1}, "seed: 0 -> 1, num_replicas: 1 -> 2"),
                         ({"n_iter": 9}, "n_iter: 10 -> 9 (may only grow)")):
        with pytest.raises(InputError) as exc:
            W.write_or_check_config(tmp_path, dict(conf, **change), keys)
        assert f"other training settings ({text})" in _one_line(exc) and "--override_config" in str(exc.value)
        assert (tmp_path / "config.json").read_text() == before  # refused: nothing written
    # Schedule-only settings and paths: accepted, recorded, no override needed.
    same_dir = str(tmp_path / "data" / ".." / "data")
    assert W.write_or_check_config(tmp_path, dict(conf, n_iter=20, val_every=7, workdir="moved",
                                                  data_dir=same_dir), keys) == {}
    rec = W.read_config(tmp_path)
    assert rec["n_iter"] == 20 and [h["changes"] for h in rec[W.HISTORY_KEY]] == [
        {"n_iter": [10, 20], "val_every": [5, 7], "workdir": ["w", "moved"]}]
    assert rec[W.HISTORY_KEY][0]["override_config"] is False
    # --override_config: resumed under the new settings, the change appended to the history.
    new = dict(conf, n_iter=20, val_every=7, workdir="moved", lr_seg=0.01, override_config=True)
    assert W.write_or_check_config(tmp_path, new, keys, override=True) == {"lr_seg": (1e-3, 0.01)}
    rec = W.read_config(tmp_path)
    assert rec["lr_seg"] == 0.01 and len(rec[W.HISTORY_KEY]) == 2
    assert rec[W.HISTORY_KEY][1]["changes"] == {"lr_seg": [0.001, 0.01]} and rec[W.HISTORY_KEY][1]["override_config"]
    W.write_or_check_config(tmp_path, dict(new, override_config=False), keys)  # same settings: history kept
    assert len(W.read_config(tmp_path)[W.HISTORY_KEY]) == 2
    # Shape keys stay refused, even with the override.
    with pytest.raises(InputError, match=r"different configuration \(num_classes: 4 -> 3\)"):
        W.write_or_check_config(tmp_path, dict(new, num_classes=3), keys, override=True)


@pytest.mark.parametrize("content, message", [("{", "not valid JSON"), ("[1]", "expected a JSON object, got list"),
                                              (b"\xff\xfe", "cannot read")])
def test_a_corrupt_config_json_is_an_error_never_replaced(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as exc:
        W.write_or_check_config(tmp_path, {"stage": "baseline"}, ("stage",))
    assert _one_line(exc).startswith(f"{path}: {message}")
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_config_errors_name_the_file(tmp_path):
    with pytest.raises(InputError) as exc:
        W.read_config(tmp_path)
    assert _one_line(exc).startswith(f"{tmp_path / 'config.json'}: not found")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(InputError, match=r"config\.json: not valid JSON") as exc:
        W.read_config(tmp_path)
    _one_line(exc)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"config\.json: expected a JSON object, got list"):
        W.stage_of(tmp_path)


def test_find_workdir_from_every_kind_of_model_path(tmp_path):
    wd = _config(tmp_path / "w", stage="baseline").resolve()
    (wd / "best").mkdir()
    (wd / "best" / "model.weights.h5").write_bytes(b"")
    (wd / "ckpt").mkdir()
    for path in (wd, wd / "best", wd / "best" / "model.weights.h5", wd / "ckpt", wd / "ckpt" / "ckpt-3"):
        assert W.find_workdir(path) == wd
    assert W.find_workdir(tmp_path / "lone.weights.h5") is None


def test_typed_hand_offs_and_their_defaults(tmp_path):
    local = _config(tmp_path / "lcl", stage="local", dataset="synthetic", no_of_decoder_blocks=2, num_classes=4)
    assert W.stage_of(local) == "local"
    assert W.decoder_blocks_of(local) == 2
    assert W.num_classes_of(local) == 4
    # A config without the key was written with the flag's default (--no_of_decoder_blocks 3), not 1.
    old = _config(tmp_path / "old", stage="local", dataset="prostate_md")
    assert W.decoder_blocks_of(old) == W.DEFAULT_DECODER_BLOCKS == 3
    assert W.num_classes_of(old) == 3  # from the dataset config
    assert W.num_classes_of(old, dataset="synthetic") == 4  # a dataset override
    assert W.num_classes_of(local, dataset="prostate_md") == 4  # a recorded num_classes wins


def test_fine_tuning_copies_the_default_decoder_blocks(tmp_path):
    from models.unet import decoder_block_prefixes
    from training.stages.supervised import transfer_prefixes

    old = _config(tmp_path / "old", stage="local", dataset="synthetic")  # no no_of_decoder_blocks recorded
    assert transfer_prefixes(str(old)) == ("enc_",) + decoder_block_prefixes(3)
    assert transfer_prefixes(str(_config(tmp_path / "g", stage="global"))) == ("enc_",)
    with pytest.raises(InputError, match="stage 'pseudolabel' cannot initialize"):
        transfer_prefixes(str(_config(tmp_path / "p", stage="pseudolabel")))


def test_typed_hand_off_errors(tmp_path):
    bad = _config(tmp_path / "bad", no_of_decoder_blocks=7, dataset="mine")
    with pytest.raises(InputError, match=r"config\.json: no 'stage'"):
        W.stage_of(bad)
    with pytest.raises(InputError, match=r"no_of_decoder_blocks must be in 1\.\.5, got 7"):
        W.decoder_blocks_of(bad)
    with pytest.raises(InputError, match=r"config\.json: no num_classes and --dataset=mine: unknown dataset"):
        W.num_classes_of(bad)
    typed = _config(tmp_path / "typed", stage="local", no_of_decoder_blocks="three")
    with pytest.raises(InputError, match=r"no_of_decoder_blocks must be int, got 'three'"):
        W.decoder_blocks_of(typed)
    with pytest.raises(InputError, match="number of classes unknown"):
        W.num_classes_of(_config(tmp_path / "none", stage="global"))
    with pytest.raises(InputError, match="not a stage workdir"):
        W.stage_of(tmp_path / "missing")


def test_run_info_is_flat_and_typed(tmp_path):
    wd = _config(tmp_path / "w", stage="baseline", dataset="acdc", data_dir="/d", no_of_tr_imgs="tr1",
                 comb_tr_imgs="c2", seed=3, init_from="/w0")
    info = W.run_info(wd / "best" / "model.weights.h5")
    assert info == W.RunInfo(workdir=wd.resolve(), stage="baseline", dataset="acdc", data_dir="/d",
                             no_of_tr_imgs="tr1", comb_tr_imgs="c2", seed=3, init_from="/w0")
    assert W.run_info(tmp_path / "elsewhere.weights.h5") == W.RunInfo()
    nested = _config(tmp_path / "n", flags={"stage": "joint", "dataset": "acdc"})
    assert W.run_info(nested).stage is None and W.run_info(nested).dataset is None  # never written nested
    with pytest.raises(InputError, match=r"seed must be int, got 'x'"):
        W.run_info(_config(tmp_path / "s", seed="x"))


# --------------------------------------------------------------------- best, summary, metrics


def test_best_record_round_trip_and_errors(tmp_path, unet):
    assert W.read_best(tmp_path) is None
    W.save_best(unet, tmp_path, np.int64(7), np.float32(0.25), extra={"round": 1})
    assert W.read_best(tmp_path) == {"step": 7, "val_dice": 0.25, "round": 1}
    assert (tmp_path / "best" / "model.weights.h5").is_file()
    assert not [p for p in (tmp_path / "best").iterdir() if p.name.startswith(".")]  # no temp files left
    (tmp_path / "best" / "best.json").write_text('{"step": 3}')
    with pytest.raises(InputError, match=r"best\.json: no 'val_dice'"):
        W.read_best(tmp_path)
    (tmp_path / "best" / "best.json").write_text("nope")
    with pytest.raises(InputError, match=r"best\.json: not valid JSON"):
        W.read_best(tmp_path)


def test_summary_round_trip_strict_json(tmp_path):
    assert W.read_summary(tmp_path) is None
    W.write_summary(tmp_path, {"step": np.int64(4), "best_val_dice": float("nan"), "rounds": [{"kept": 2}],
                               "loss": np.float32(0.5), "stage": "joint"})
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text
    assert W.read_summary(tmp_path) == {"step": 4.0, "best_val_dice": None, "rounds": [{"kept": 2.0}],
                                        "loss": 0.5, "stage": "joint"}
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(InputError, match=r"summary\.json: not valid JSON"):
        W.read_summary(tmp_path)


def test_eval_summary_reader(tmp_path):
    ev = tmp_path / "eval_test"
    ev.mkdir()
    summary = {"overall": {"dice": {"mean": 0.5}}, "structures": {"lv": {}}, "n_volumes": 2}
    (ev / "summary.json").write_text(json.dumps(summary))
    assert W.read_eval_summary(ev) == W.read_eval_summary(ev / "summary.json") == summary
    (tmp_path / "summary.json").write_text(json.dumps({"step": 5}))  # a stage's own summary
    with pytest.raises(InputError, match="is not an evaluate.py summary"):
        W.read_eval_summary(tmp_path / "summary.json")
    with pytest.raises(InputError, match=r"eval_val/summary\.json: file not found"):
        W.read_eval_summary(tmp_path / "eval_val" / "summary.json")


def test_metrics_log_round_trip_resume_and_reader(tmp_path):
    log = W.MetricsLog(tmp_path, 0)
    for s in (1, 2, 3):
        log.add("train", s, {"loss": np.float32(1.0 / s), "bad": float("inf")})
    log.add("val", 2, {"val_dice": 0.5})
    log.set("note", "kept")
    log.write()
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["train"][0] == {"step": 1, "loss": 1.0, "bad": None}
    resumed = W.MetricsLog(tmp_path, 2)  # resume from step 2: later entries are dropped
    assert [e["step"] for e in resumed.data["train"]] == [1, 2] and resumed.data["note"] == "kept"
    assert W.read_metrics(tmp_path) == W.read_metrics(tmp_path / "metrics.json") == {
        "train": data["train"], "val": [{"step": 2, "val_dice": 0.5}]}
    (tmp_path / "metrics.json").write_text("[1]")
    assert W.MetricsLog(tmp_path, 5).data == {"train": [], "val": []}  # unreadable history: a new one
    with pytest.raises(InputError, match=r"metrics\.json: expected a JSON object"):
        W.read_metrics(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty/metrics\.json: file not found"):
        W.read_metrics(tmp_path / "empty")


# ------------------------------------------------------------------------------ model paths


@pytest.fixture(scope="module")
def unet():
    import keras

    from models.unet import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet(3)
    model(np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32), training=True)
    return model


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype(np.float32)


def _same(model, reference, x):
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(reference(x, training=False)),
                               atol=1e-5)


def test_model_source_of_each_kind(tmp_path, unet):
    import tensorflow as tf

    wd = _config(tmp_path / "w", stage="baseline", dataset="prostate_md")
    W.save_final(unet, wd)
    assert W.model_source(wd) == ("weights", wd / "final" / "model.weights.h5", wd.resolve())
    W.save_best(unet, wd, 1, 0.5)
    assert W.model_source(wd).path == wd / "best" / "model.weights.h5"  # best/ preferred
    assert W.model_source(wd / "final" / "model.weights.h5").kind == "weights"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=unet), str(wd / "ckpt"), max_to_keep=1)
    manager.save(checkpoint_number=3)
    assert W.model_source(wd / "ckpt") == ("checkpoint", wd / "ckpt" / "ckpt-3", wd.resolve())
    assert W.model_source(wd / "ckpt" / "ckpt-3").kind == "checkpoint"
    for v in ("1", "7"):
        (tmp_path / "sm" / v).mkdir(parents=True)
        (tmp_path / "sm" / v / "saved_model.pb").write_bytes(b"")
    assert W.model_source(tmp_path / "sm") == ("saved_model", tmp_path / "sm" / "7", None)
    assert W.model_source(tmp_path / "sm" / "1").path == tmp_path / "sm" / "1"
    assert W.is_saved_model(tmp_path / "sm") and not W.is_saved_model(wd)
    assert W.latest_version(tmp_path / "sm") == tmp_path / "sm" / "7" and W.latest_version(wd) is None
    assert W.saved_model_metadata(tmp_path / "sm") == {}


def test_a_validating_stage_without_best_weights_says_it_uses_final(tmp_path, unet, capsys):
    """Issue 20: W/final instead of W/best is said (once per workdir) for the stages that validate;
    for pre-training stages W/final is their model."""
    wd = _config(tmp_path / "b", stage="baseline", dataset="prostate_md")
    W.save_final(unet, wd)
    capsys.readouterr()
    assert W.model_source(wd).path == W.model_source(wd).path == wd / "final" / "model.weights.h5"
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {wd}: no best/model.weights.h5 (no validation was saved); using "
        f"{wd / 'final' / 'model.weights.h5'}, the model at the end of the stage"]
    pre = _config(tmp_path / "g", stage="global", dataset="prostate_md")
    W.save_final(unet, pre)
    assert W.model_source(pre).path == pre / "final" / "model.weights.h5"
    assert capsys.readouterr().err == ""


def test_model_source_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        W.model_source(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match=r"expected a \.weights\.h5 file"):
        W.model_source(tmp_path / "x.txt")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint").write_text("")
    with pytest.raises(InputError, match="holds no checkpoint yet"):
        W.model_source(tmp_path / "ck")
    wd = _config(tmp_path / "w", stage="baseline")
    with pytest.raises(InputError, match=r"no best/ or final/model\.weights\.h5 in this workdir") as exc:
        W.model_source(wd)
    _one_line(exc)
    with pytest.raises(InputError, match="not a SavedModel"):
        W.saved_model_metadata(wd)
    (tmp_path / "sm" / "assets.extra").mkdir(parents=True)
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "sm" / "assets.extra" / "plc_metadata.json").write_text("{")
    with pytest.raises(InputError, match=r"plc_metadata\.json: not valid JSON"):
        W.saved_model_metadata(tmp_path / "sm")


def test_load_model_from_weights_and_checkpoints(tmp_path, unet, x):
    import tensorflow as tf

    wd = _config(tmp_path / "w", stage="baseline", dataset="prostate_md")  # 3 classes, via the dataset
    W.save_best(unet, wd, 1, 0.5)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=unet, step=tf.Variable(2)), str(wd / "ckpt"),
                               max_to_keep=1).save(checkpoint_number=2)
    for path in (wd, wd / "ckpt" / "ckpt-2"):  # (model_source: every path of each kind)
        loaded = W.load_model(path)
        assert loaded.dataset == "prostate_md"
        _same(loaded.model, unet, x)
    _same(W.load_unet(wd / "ckpt"), unet, x)
    lone = tmp_path / "lone.weights.h5"
    unet.save_weights(str(lone))
    assert W.load_model(lone, dataset="prostate_md").dataset == "prostate_md"
    _same(W.load_unet(lone, num_classes=3, image_size=(32, 32)), unet, x)
    with pytest.raises(InputError, match="number of classes unknown"):
        W.load_model(lone)
    with pytest.raises(InputError, match="cannot load UNet weights for 4 classes"):
        W.load_unet(lone, num_classes=4)
    with pytest.raises(InputError, match="cannot restore a 4-class UNet"):
        W.load_model(wd / "ckpt", dataset="synthetic")  # no recorded num_classes: the override decides
    _config(wd, stage="baseline", dataset="prostate_md", num_classes=3)
    assert W.load_model(wd / "ckpt", dataset="synthetic").dataset == "synthetic"  # recorded classes win


def test_restore_checkpoint_only_the_given_objects(tmp_path, unet):
    import keras
    import tensorflow as tf

    from models.unet import build_unet

    prefix = tf.train.Checkpoint(model=unet, step=tf.Variable(5, dtype=tf.int64)).save(str(tmp_path / "c"))
    other = build_unet(3)
    W.restore_checkpoint(prefix, model=other)  # the other entries (step) are ignored
    np.testing.assert_array_equal(other.get_layer("seg_fin_layer").kernel.numpy(),
                                  unet.get_layer("seg_fin_layer").kernel.numpy())
    with pytest.raises(InputError, match="cannot restore model") as exc:
        W.restore_checkpoint(prefix, model=build_unet(2))  # the classes do not fit
    _one_line(exc)
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(InputError, match="cannot restore head"):
        W.restore_checkpoint(prefix, head=head)  # not in the checkpoint


def test_saved_model_loads_as_predictor_and_not_as_unet(tmp_path, x):
    import keras
    import tensorflow as tf

    from evaluation.export import export_saved_model

    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Conv2D(3, 1, name="seg_fin_layer")(inp))
    path = export_saved_model(model, tmp_path / "exp", {"dataset": "synthetic", "n4": True})
    loaded = W.load_model(tmp_path / "exp")
    assert loaded.dataset == "synthetic"
    assert W.load_model(path, dataset="acdc").dataset == "acdc"
    np.testing.assert_allclose(loaded.model(x), tf.nn.softmax(model(x), -1).numpy(), atol=1e-5)
    assert W.saved_model_metadata(tmp_path / "exp")["n4"] is True
    with pytest.raises(InputError, match="is a SavedModel"):
        W.load_unet(tmp_path / "exp")


# ----------------------------------------------------------------------------- module structure


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_export_and_inference_do_not_import_each_other():
    assert not {m for m in _imported_modules(REPO / "evaluation" / "export.py") if "inference" in m}
    assert not {m for m in _imported_modules(REPO / "evaluation" / "inference.py") if "export" in m}
    for path in (REPO / "workdir").glob("*.py"):  # the loader depends on no evaluation module
        assert not {m for m in _imported_modules(path) if m.startswith("evaluation")}, path


def test_import_does_not_load_tensorflow():
    code = "import sys, workdir, evaluation.export; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_json_safe_numbers():
    from workdir.records import json_safe

    assert json_safe({"a": [np.float64(math.inf), 2, "s", None]}) == {"a": [None, 2.0, "s", None]}
