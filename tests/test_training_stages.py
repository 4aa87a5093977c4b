"""Smoke runs of every training stage on the tiny synthetic dataset (64x64, a few steps), checking
what each stage writes; joint-stage resume across a round boundary; pseudo-label geometry."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from common.errors import InputError
from tests._training_data import stage_conf, tiny_data  # noqa: F401  (session fixture)


def _events(path):
    return list(path.glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def baseline_dir(tiny_data, tmp_path_factory):  # noqa: F811
    from training.stages.supervised import run_supervised

    wd = tmp_path_factory.mktemp("stages") / "baseline"
    summary = run_supervised(stage_conf("baseline", tiny_data, wd, n_iter=4))
    assert summary["step"] == 4
    return wd


def test_baseline_writes_workdir(baseline_dir):
    wd = baseline_dir
    conf = json.loads((wd / "config.json").read_text())
    assert conf["stage"] == "baseline" and conf["num_classes"] == 4 and conf["image_size"] == [64, 64]
    assert (wd / "best" / "model.weights.h5").is_file() and (wd / "final" / "model.weights.h5").is_file()
    best = json.loads((wd / "best" / "best.json").read_text())
    assert best["step"] in (1, 3, 4) and 0.0 <= best["val_dice"] <= 1.0
    metrics = json.loads((wd / "metrics.json").read_text())
    assert [e["step"] for e in metrics["val"]] == [1, 3, 4]  # i % 2 == 0 -> steps 1, 3, and the last
    assert all(np.isfinite(e["loss"]) for e in metrics["train"])
    assert {"val_dice", "val_dice_rv", "val_dice_myo", "val_dice_lv"} <= set(metrics["val"][0])
    assert (wd / "ckpt" / "checkpoint").is_file()
    assert _events(wd / "train") and _events(wd / "eval")
    from workdir import load_unet

    model = load_unet(str(wd))
    assert model.output_shape[-1] == 4


TRAIN_SCALARS = {"loss", "seg_loss", "skipped_iterations"}  # the tags README.md names
EVAL_SCALARS = {"val_dice", "val_dice_rv", "val_dice_myo", "val_dice_lv"}
EVAL_IMAGES = {"image_gt_pred"}


def test_tensorboard_event_reader_finds_the_documented_summaries(baseline_dir):
    """TensorBoard's own reader (the plugin accumulator its server uses) on W/train and W/eval."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    def load(run):
        acc = EventAccumulator(str(baseline_dir / run), size_guidance={"tensors": 0})
        acc.Reload()
        return acc

    train, ev = load("train"), load("eval")
    assert set(train.PluginTagToContent("scalars")) == TRAIN_SCALARS
    assert set(ev.PluginTagToContent("scalars")) == EVAL_SCALARS
    assert set(ev.PluginTagToContent("images")) == EVAL_IMAGES
    loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in train.Tensors("loss")]
    metrics = json.loads((baseline_dir / "metrics.json").read_text())
    assert loss == [(e["step"], pytest.approx(e["loss"])) for e in metrics["train"]]
    dice = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in ev.Tensors("val_dice")]
    assert dice == [(e["step"], pytest.approx(e["val_dice"])) for e in metrics["val"]]
    image = ev.Tensors("image_gt_pred")[0]
    width, height, *pngs = tensor_util.make_ndarray(image.tensor_proto)
    assert (int(width), int(height)) == (3 * 64, 64) and len(pngs) == 3  # [image | GT | prediction]
    assert all(p.startswith(b"\x89PNG") for p in pngs)


def test_tensorboard_command_serves_the_workdir(baseline_dir, tmp_path):
    """README: ``tensorboard --logdir W`` (the console script make setup installs) serves both runs."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(exe), "--logdir", str(baseline_dir), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline and set(tags) != {"train", "eval"}:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
            except OSError:
                continue
        assert set(tags) == {"train", "eval"}, tags
        assert set(tags["train"]) == TRAIN_SCALARS and set(tags["eval"]) == EVAL_SCALARS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=5) as r:
            assert set(json.loads(r.read())["eval"]) == EVAL_IMAGES
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_workdir_with_other_shapes_is_refused(baseline_dir, tiny_data):  # noqa: F811
    from training.stages.supervised import run_supervised

    with pytest.raises(InputError, match="different configuration"):
        run_supervised(stage_conf("baseline", tiny_data, baseline_dir, batch_size=8))


def test_resume_in_another_precision(baseline_dir, tiny_data, tmp_path, capsys):  # noqa: F811
    """--precision may change on resume (with --override_config: it changes the training): the fp32
    run's weights, Adam state and counters carry over into a mixed_bfloat16 run. (mixed_float16 adds
    its loss scale to the same layout, see tests/test_precision.py; its float16 convolution gradients
    are too slow on CPUs for a stage run.)"""
    import shutil

    import tensorflow as tf

    from training.stages.supervised import run_supervised

    wd = tmp_path / "baseline"
    shutil.copytree(baseline_dir, wd)
    with pytest.raises(InputError, match=r"other training settings \(precision: 'fp32' -> 'mixed_bfloat16'\)"):
        run_supervised(stage_conf("baseline", tiny_data, wd, n_iter=5, precision="mixed_bfloat16"))
    capsys.readouterr()
    summary = run_supervised(stage_conf("baseline", tiny_data, wd, n_iter=5, precision="mixed_bfloat16",
                                        override_config=True))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert err == [f"warning: [baseline] --override_config: {wd} continues under changed settings (precision: "
                   f"'fp32' -> 'mixed_bfloat16'); recorded in {wd / 'config.json'} (config_history)"]
    history = json.loads((wd / "config.json").read_text())["config_history"]
    assert len(history) == 1 and history[0]["override_config"] is True
    assert history[0]["changes"] == {"precision": ["fp32", "mixed_bfloat16"], "n_iter": [4, 5],
                                     "workdir": [str(baseline_dir), str(wd)]}  # the copy is another workdir
    assert summary["step"] == 5 and summary["nonfinite"] == 0 and summary["loss_scale_overflows"] == 0
    assert json.loads((wd / "config.json").read_text())["precision"] == "mixed_bfloat16"
    reader = tf.train.load_checkpoint(str(wd / "ckpt"))
    assert reader.get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE") == 5
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 5  # 4 fp32 + 1 bf16
    train = json.loads((wd / "metrics.json").read_text())["train"]
    assert train[-1]["step"] == 5 and np.isfinite(train[-1]["loss"])
    from models.precision import precision_of
    from workdir import load_unet

    assert precision_of(load_unet(str(wd))) == "fp32"  # float32 weights load in any precision


def test_pseudolabel_then_joint_rounds_and_resume(baseline_dir, tiny_data, tmp_path, capsys):  # noqa: F811
    from data import store
    from training.stages.joint import run_joint
    from training.stages.pseudolabel import run_pseudolabel

    wp = tmp_path / "pl"
    summary = run_pseudolabel(stage_conf("pseudolabel", tiny_data, wp, init_from=str(baseline_dir)))
    out = wp / "pseudo_labels" / "round_0"
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["kept"] == len(manifest["kept"]) == 26
    # Pseudo-labels keep the geometry of their preprocessed volume.
    for vid in manifest["kept"][:3]:
        pl = nib.load(str(out / f"{vid}.nii.gz"))
        img = nib.load(str(tiny_data / vid / "image.nii.gz"))
        assert pl.shape == img.shape
        np.testing.assert_allclose(pl.affine, img.affine, atol=1e-5)
        assert set(np.unique(np.asarray(pl.dataobj))) <= {0, 1, 2, 3}

    wj = tmp_path / "joint"
    conf = stage_conf("joint", tiny_data, wj, init_from=str(baseline_dir), pseudo_label_dir=str(out),
                      rounds=2, n_iter_per_round=2)
    first = run_joint(conf.replace(max_steps=1))  # stops inside round 0
    assert first["step"] == 1
    capsys.readouterr()
    second = run_joint(conf)  # same command without the cap: resumes and runs both rounds
    assert second["step"] == 4
    out_log = capsys.readouterr().out
    # The round end (restore of the best state, best reset) happens although round 0 was resumed.
    assert out_log.count("[joint] round 0 done") == 1 and "round 1 done" not in out_log
    assert (wj / "pseudo_labels" / "round_1" / "manifest.json").is_file()  # re-estimated after round 0
    assert not (wj / "pseudo_labels" / "round_2").exists()  # none after the last round
    assert (wj / "best" / "model.weights.h5").is_file() and (wj / "best_state" / "checkpoint").is_file()
    metrics = json.loads((wj / "metrics.json").read_text())
    assert {"seg_loss", "local_loss", "net_loss"} <= set(metrics["train"][-1])
    assert metrics["val"][-1]["step"] == 4
    summ = json.loads((wj / "summary.json").read_text())
    assert summ["skipped"] >= 0 and [r["round"] for r in summ["rounds"]] == [0, 1]
    best = json.loads((wj / "best" / "best.json").read_text())
    assert (summ["best_val_dice"], summ["best_step"]) == (best["val_dice"], best["step"])
    # Volumes are never modified by the stages.
    assert store.load_volume(tiny_data, "001").label is not None


def test_joint_rejects_other_bt_size(baseline_dir, tiny_data, tmp_path):  # noqa: F811
    from training.stages.joint import run_joint

    with pytest.raises(InputError, match="bt_size must be 10"):
        run_joint(stage_conf("joint", tiny_data, tmp_path / "j", init_from=str(baseline_dir), bt_size=8))


def test_pretrain_global_local_then_finetune(tiny_data, tmp_path):  # noqa: F811
    from training.stages.pretrain import run_pretrain
    from training.stages.supervised import run_supervised

    wg, wl, wf = tmp_path / "gcl", tmp_path / "lcl", tmp_path / "ft"
    g = run_pretrain(stage_conf("global", tiny_data, wg, n_iter=2))
    assert g["step"] == 2 and np.isfinite(g["final_loss"])
    assert (wg / "final" / "model.weights.h5").is_file()
    l_sum = run_pretrain(stage_conf("local", tiny_data, wl, n_iter=2, init_from=str(wg)))
    assert l_sum["step"] == 2 and np.isfinite(l_sum["final_loss"])
    from workdir import load_unet

    gcl, lcl = load_unet(str(wg)), load_unet(str(wl))
    # The encoder was copied and then frozen: identical kernels; BN statistics moved (training mode).
    np.testing.assert_array_equal(gcl.get_layer("enc_c1_a_conv").kernel.numpy(),
                                  lcl.get_layer("enc_c1_a_conv").kernel.numpy())
    np.testing.assert_array_equal(gcl.get_layer("enc_c1_a_bn").gamma.numpy(),
                                  lcl.get_layer("enc_c1_a_bn").gamma.numpy())
    # Statistics are not copied (fresh: mean 0) and the frozen encoder's BN ran in training mode.
    assert np.abs(lcl.get_layer("enc_c6_b_bn").moving_mean.numpy()).max() > 0
    # Decoder block 3 was trained, block 4 was not (l = 3): block 4 stays at a fresh random init.
    f = run_supervised(stage_conf("baseline", tiny_data, wf, n_iter=1, init_from=str(wl)))
    assert f["transferred_layers"] == 24 + 18  # 12 encoder + 9 decoder conv blocks (conv + BN each)


def test_pseudo_labels_reused_only_with_the_same_settings(tiny_data, tmp_path):  # noqa: F811
    import keras

    import configs
    from data import store
    from training.stages.pseudolabel import make_pseudo_labels

    x_in = keras.Input((64, 64, 1))
    model = keras.Model(x_in, keras.layers.Conv2D(4, 1, name="seg_fin_layer")(x_in))
    vols = store.load_volumes(tiny_data, ["001", "002"])
    cfg = configs.get_config("synthetic")
    conf = stage_conf("pseudolabel", tiny_data, tmp_path)
    first = make_pseudo_labels(model, conf, cfg, vols, tmp_path / "pl")
    assert make_pseudo_labels(model, conf, cfg, vols, tmp_path / "pl") == first  # complete: reused
    other = make_pseudo_labels(model, conf.replace(seed=1), cfg, vols, tmp_path / "pl")
    assert other["seed"] == 1 and json.loads((tmp_path / "pl" / "manifest.json").read_text())["seed"] == 1
