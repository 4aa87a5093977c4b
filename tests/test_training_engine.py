"""Unit tests of the training engine: loss scaling, NaN guard (skip, count, stop keeping the last
good checkpoint), metrics/config files, summaries, the joint host sampler."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import InputError
from training.engine import checkpoint as ck
from training.engine import loop as loop_lib
from training.engine import steps, summaries
from training.engine.strategy import resolve_jit
from workdir import MetricsLog, restore_checkpoint, write_or_check_config


def _tiny_model():
    x_in = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="enc_c1_a_conv")(x_in)
    x = keras.layers.BatchNormalization(name="enc_c1_a_bn")(x)
    return keras.Model(x_in, x)


def _mse_compute(model):
    def compute(batch, replicas):
        x, y = batch
        per = tf.reduce_mean(tf.square(model(x, training=True) - y), axis=[1, 2, 3])  # (N,)
        loss = steps.scale_units(per, replicas)
        return loss, {"mse": loss}
    return compute


def test_scale_units_is_share_of_global_mean():
    per = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(steps.scale_units(per, 1)) == pytest.approx(3.0)
    assert float(steps.scale_units(per, 2)) == pytest.approx(1.5)  # summed over 2 replicas -> mean


def test_step_applies_adam_and_nan_guard_skips_everything():
    strategy = tf.distribute.get_strategy()
    model = _tiny_model()
    opt = steps.make_optimizer(1e-2, model.trainable_variables, strategy)
    assert opt.epsilon == pytest.approx(1e-8)
    step = steps.make_train_step(strategy, _mse_compute(model), model.trainable_variables, opt,
                                 state_variables=model.non_trainable_variables)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("f4")
    y = np.zeros((4, 8, 8, 2), "f4")
    before = [v.numpy() for v in model.weights]
    loss, mets, applied = step((tf.constant(x), tf.constant(y)))
    assert bool(applied) and np.isfinite(float(loss)) and float(mets["mse"]) == pytest.approx(float(loss))
    assert int(opt.iterations.numpy()) == 1
    moved = [v.numpy() for v in model.weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, moved))
    x_bad = x.copy()
    x_bad[0, 0, 0, 0] = np.nan
    loss, _, applied = step((tf.constant(x_bad), tf.constant(y)))
    assert not bool(applied) and not np.isfinite(float(loss))
    assert int(opt.iterations.numpy()) == 1  # Adam state untouched
    for a, b in zip(moved, [v.numpy() for v in model.weights]):  # weights and BN statistics untouched
        np.testing.assert_array_equal(a, b)


def test_loop_counts_nonfinite_and_stops_keeping_last_good_checkpoint(tmp_path):
    strategy = tf.distribute.get_strategy()
    model = _tiny_model()
    opt = steps.make_optimizer(1e-2, model.trainable_variables, strategy)
    step = steps.make_train_step(strategy, _mse_compute(model), model.trainable_variables, opt,
                                 state_variables=model.non_trainable_variables)
    good = (tf.ones((2, 8, 8, 1)), tf.zeros((2, 8, 8, 2)))
    bad = (tf.fill((2, 8, 8, 1), np.nan), tf.zeros((2, 8, 8, 2)))
    stream = iter([good, good, bad, good] + [bad] * 10)
    state = ck.TrainState()
    ckpt = ck.Checkpointer(tmp_path / "ckpt", model=model, optimizer=opt, state=state)
    metrics = MetricsLog(tmp_path, 0)
    cfg = loop_lib.LoopConfig(workdir=str(tmp_path), end_step=20, val_every=0, ckpt_every=2, log_every=1,
                              max_nonfinite=3)
    with pytest.raises(loop_lib.TrainingDiverged, match="3 consecutive non-finite"):
        loop_lib.run_loop(cfg, state, step, stream, ckpt, metrics)
    assert int(state.nonfinite.numpy()) == 4  # 1 isolated + 3 in a row
    assert ckpt.latest.endswith("ckpt-6")  # the last checkpoint before the divergence
    restored = ck.TrainState()
    restore_checkpoint(ckpt.latest, state=restored)
    assert int(restored.step.numpy()) == 6


def test_loop_validation_schedule_best_and_metrics(tmp_path):
    state = ck.TrainState()
    calls = []

    def step_fn(batch):
        return tf.constant(0.5), {"seg_loss": tf.constant(0.5)}, tf.constant(True)

    dices = iter([0.2, 0.5, 0.4, 0.6])

    def validate(step):
        calls.append(step)
        return {"val_dice": next(dices), "images": np.zeros((1, 4, 12, 3), np.uint8)}

    saved = []
    writers = (tf.summary.create_file_writer(str(tmp_path / "train")),
               tf.summary.create_file_writer(str(tmp_path / "eval")))
    ckpt = ck.Checkpointer(tmp_path / "ckpt", state=state)
    metrics = MetricsLog(tmp_path, 0)
    cfg = loop_lib.LoopConfig(workdir=str(tmp_path), end_step=7, val_every=3, ckpt_every=100, log_every=2)
    res = loop_lib.run_loop(cfg, state, step_fn, iter(range(100)), ckpt, metrics, validate_fn=validate,
                            save_best_fn=lambda s, d: saved.append((s, d)), writers=writers)
    assert calls == [1, 4, 7]
    assert saved == [(1, 0.2), (4, 0.5)]  # 0.4 at step 7 is not better
    assert res["best_val_dice"] == pytest.approx(0.5) and res["step"] == 7
    again = loop_lib.run_loop(cfg, state, step_fn, iter(()), ckpt, metrics, validate_fn=validate)
    assert again["step"] == 7 and again["last_val_dice"] == pytest.approx(0.4)  # rerun of a finished run
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["step"] for e in data["val"]] == [1, 4, 7]
    assert [e["step"] for e in data["train"]] == [2, 4, 6, 7]
    assert set(data["train"][0]) == {"step", "loss", "seg_loss"}
    assert list((tmp_path / "eval").glob("events.out.tfevents.*"))
    # Resume truncates the history to the restored step.
    assert [e["step"] for e in MetricsLog(tmp_path, 4).data["val"]] == [1, 4]


def test_config_refuses_shape_changes_but_accepts_others(tmp_path):
    conf = {"stage": "baseline", "dataset": "acdc", "num_classes": 4, "n_iter": 10}
    write_or_check_config(tmp_path, conf, ("stage", "dataset", "num_classes"))
    write_or_check_config(tmp_path, dict(conf, n_iter=20), ("stage", "dataset", "num_classes"))
    assert json.loads((tmp_path / "config.json").read_text())["n_iter"] == 20
    with pytest.raises(InputError, match="num_classes: 4 -> 3"):
        write_or_check_config(tmp_path, dict(conf, num_classes=3), ("stage", "dataset", "num_classes"))


def test_resolve_jit_and_overlays():
    assert resolve_jit("auto") is bool(tf.config.list_physical_devices("GPU"))
    assert resolve_jit("true") and not resolve_jit("false")
    with pytest.raises(InputError):
        resolve_jit("maybe")
    img = np.random.default_rng(0).random((2, 5, 6)).astype("f4")
    lab = np.zeros((2, 5, 6), int)
    lab[:, 2:4, 2:4] = 2
    out = summaries.overlay_images(img, lab, lab)
    assert out.shape == (2, 5, 18, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 6:12], out[:, :, 12:18])  # GT panel == prediction panel


def test_joint_sampler_units_and_skips():
    from data.joint_sampler import JointSampler, augment_unit

    rng = np.random.default_rng(0)
    full = np.zeros((6, 32, 32), np.int32)
    full[:, 4:12, 4:12], full[:, 14:20, 14:20], full[:, 22:28, 4:12] = 1, 2, 3  # every class in every slice
    img = rng.random((6, 32, 32)).astype("f4")
    s = JointSampler([img], [full], [img], [full], num_classes=4, min_seg_classes=3, seed=0)
    unit = s.sample()
    assert unit["x_lab"].shape == (20, 32, 32) and unit["x_con"].shape == (20, 32, 32)
    assert unit["anchor_yx"].shape == (20, 3, 3, 2) and unit["anchor_valid"].all()
    for k, spec in s.signature().items():
        if k in unit:
            assert tuple(spec.shape) == unit[k].shape
    aug = augment_unit({**{k: tf.constant(v) for k, v in unit.items()}, "valid": tf.constant(True),
                        "seed": tf.constant([1, 2], tf.int64)}, 4, 10)
    assert aug["y_lab"].shape == (20, 32, 32, 4) and aug["x_con"].shape == (20, 32, 32, 1)
    np.testing.assert_allclose(tf.reduce_sum(aug["y_lab"], -1).numpy(), 1.0, atol=1e-5)
    partial = full.copy()
    partial[partial == 1] = 0  # class 1 missing from every unlabeled slice -> the iteration is skipped
    assert JointSampler([img], [full], [img], [partial], 4, 3, seed=0).sample() is None


def test_chief_task_convention():
    from training.engine.strategy import chief_task

    assert chief_task(None, None, False)
    assert chief_task("worker", 0, False) and not chief_task("worker", 1, False)
    assert chief_task("chief", 0, True) and not chief_task("worker", 0, True)


def test_tf_config_chief_and_pipeline_leaves_evaluation_to_the_chief(tmp_path, monkeypatch, capsys):
    from training.engine.strategy import tf_config_is_chief
    from training.pipeline import make_options, run_pipeline

    cluster = {"worker": ["h0:1", "h1:1"]}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config_is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert tf_config_is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": dict(cluster, chief=["c:1"]),
                                                "task": {"type": "worker", "index": 0}}))
    assert not tf_config_is_chief()
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(InputError, match="TF_CONFIG"):
        tf_config_is_chief()
    # worker 1 of a finished baseline: no training (done), no evaluation, no export, no results files
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    wb = tmp_path / "out" / "baseline"
    wb.mkdir(parents=True)
    (wb / "summary.json").write_text(json.dumps({"step": 3}))
    opts = make_options("paper", {"baseline_iters": 3, "val_every": 1, "ckpt_every": 1, "crf": 0},
                        dataset="synthetic", data_dir=str(tmp_path), out_dir=str(tmp_path / "out"),
                        no_of_tr_imgs="tr1", comb_tr_imgs="c1", methods=["baseline"], seed=0,
                        export_dir=str(tmp_path / "export"), extra=[])
    assert run_pipeline(opts) == {}
    assert "the chief evaluates and exports" in capsys.readouterr().out
    assert not (wb / "eval_test").exists() and not (tmp_path / "export").exists()
    assert not (tmp_path / "out" / "results.md").exists()


def test_pipeline_results_table_and_done_check(tmp_path):
    from training.pipeline import _done, format_results, kept_start_note

    stat = {"mean": 0.5, "std": 0.1, "n": 2, "n_inf": 0}
    summ = {"n_volumes": 2, "structures": {"rv": {"dice": stat}, "lv": {"dice": dict(stat, mean=None)}},
            "overall": {"dice": stat}}
    table = format_results({"baseline": summ, "plc": summ}, notes={"plc": "a note"})
    assert "| Baseline (random init) | 0.500 ± 0.100 | n/a | 0.500 ± 0.100 |" in table
    assert "| PLC (release) |" in table and table.endswith("\nNote, PLC (release): a note.")
    assert table.count("\n| ") == 3  # header + 2 methods
    assert "| what ran |" in format_results({"plc": summ}, labels={"plc": "what ran"})
    wd = tmp_path / "w"
    wd.mkdir()
    assert not _done(wd, 5)
    (wd / "summary.json").write_text(json.dumps({"step": 5}))
    (wd / "config.json").write_text(json.dumps({"crf": False}))
    assert _done(wd, 5) and not _done(wd, 6)
    assert _done(wd, 5, crf=False) and not _done(wd, 5, crf=True)
    # The notes under the table: a joint stage that kept a round's start, or skipped most iterations.
    assert kept_start_note(wd) == ""
    (wd / "summary.json").write_text(json.dumps({"step": 120, "skipped": 119, "kept_round_start": None}))
    assert kept_start_note(wd).startswith("119 of its 120 iterations were skipped")
    (wd / "summary.json").write_text(json.dumps({"step": 120, "skipped": 0, "kept_round_start": 1,
                                                 "kept_baseline": False, "best_val_dice": 0.5}))
    assert kept_start_note(wd) == ("kept the model round 1 started from; no later validation beat its "
                                   "validation Dice 0.5000")
    (wd / "summary.json").write_text(json.dumps({"step": 120, "skipped": 0, "kept_round_start": 1,
                                                 "kept_baseline": True, "best_val_dice": 0.5}))
    assert "so this row scores the baseline's weights" in kept_start_note(wd)


def test_checkpointer_restores_from_the_chief_dir_and_saves_to_its_own(tmp_path):
    """Multi-worker convention: non-chief workers save to a temp dir but resume from the chief's."""
    chief_state = ck.TrainState()
    chief_state.step.assign(5)
    ck.Checkpointer(tmp_path / "chief", state=chief_state).save(5)
    state = ck.TrainState()
    worker = ck.Checkpointer(tmp_path / "tmp_worker", restore_from=tmp_path / "chief", state=state)
    assert worker.restore_latest() and int(state.step.numpy()) == 5
    worker.save(6)
    assert (tmp_path / "tmp_worker" / "checkpoint").is_file()
    assert ck.Checkpointer(tmp_path / "chief", state=ck.TrainState()).latest.endswith("ckpt-5")
    assert not ck.Checkpointer(tmp_path / "other", state=ck.TrainState()).restore_latest()


def test_joint_compute_is_one_forward_with_seg_rows_and_h_rows():
    """Seg loss on logits rows [:N_l] of the concatenated forward (BN over all rows), h head on
    dec_c1_a rows [N_l:], total = seg + lamda * pair loss (reference built by hand)."""
    import functools

    from data.plc_selection import sample_anchors
    from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
    from losses.segmentation import segmentation_loss
    from models.heads import build_h

    c, h, n_lab, b = 3, 16, 4, 2
    x_in = keras.Input((h, h, 1))
    x = x_in
    for name in ("enc_c1_a", "dec_c1_a", "seg_c1_a"):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=name)(x)
    unet = keras.Model(x_in, keras.layers.Conv2D(c, 3, padding="same", name="seg_fin_layer")(x))
    head = build_h(in_channels=4)
    rng = np.random.default_rng(0)
    con = rng.integers(0, c, (2 * b, h, h))
    yx, valid = sample_anchors(con, c, 3, rng)
    batch = {"x_lab": tf.constant(rng.normal(size=(n_lab, h, h, 1)), tf.float32),
             "y_lab": tf.constant(np.eye(c)[rng.integers(0, c, (n_lab, h, h))], tf.float32),
             "x_con": tf.constant(rng.normal(2.0, 3.0, size=(2 * b, h, h, 1)), tf.float32),
             "y_con": tf.constant(np.eye(c)[con], tf.float32), "anchor_yx": tf.constant(yx),
             "anchor_valid": tf.constant(valid)}
    seg_fn = functools.partial(segmentation_loss, dsc_loss=2)
    compute = steps.joint_compute(steps.joint_model(unet), head, seg_fn, pseudo_label_local_contrastive_loss, 0.1)
    loss, mets = compute(batch, 1)

    x_all = tf.concat([batch["x_lab"], batch["x_con"]], 0)  # (N_l + 2B, H, W, 1)
    seg_ref = float(tf.reduce_mean(seg_fn(unet(x_all, training=True)[:n_lab], batch["y_lab"], reduction="none")))
    dec = keras.Model(unet.input, unet.get_layer("dec_c1_a").output)(x_all, training=True)  # (N, H, W, 4)
    plc_ref = float(pseudo_label_local_contrastive_loss(head(dec[n_lab:], training=True), batch["y_con"], yx, valid))
    assert float(mets["seg_loss"]) == pytest.approx(seg_ref, rel=1e-5)
    assert float(mets["local_loss"]) == pytest.approx(plc_ref, rel=1e-5)
    assert float(loss) == pytest.approx(seg_ref + 0.1 * plc_ref, rel=1e-5)
    # BatchNorm statistics over all rows matter: a labeled-only forward gives another loss.
    alone = float(tf.reduce_mean(seg_fn(unet(batch["x_lab"], training=True), batch["y_lab"], reduction="none")))
    assert abs(alone - seg_ref) > 1e-4


def test_contrastive_halves_get_separate_intensity_draws():
    """ORIGINAL_SPEC §3.4.2 step 4: one brightness/contrast draw for rows [:B], another for [B:]."""
    from data.joint_sampler import augment_unit

    img = np.random.default_rng(1).random((32, 32)).astype("f4")
    unit = {"x_lab": tf.zeros((20, 32, 32)), "y_lab": tf.zeros((20, 32, 32), tf.int32),
            "x_con": tf.constant(np.repeat(img[None], 20, 0)), "y_con": tf.zeros((20, 32, 32), tf.int32),
            "anchor_yx": tf.zeros((20, 3, 3, 2), tf.int32), "anchor_valid": tf.zeros((20, 3, 3), bool),
            "valid": tf.constant(True), "seed": tf.constant([5, 6], tf.int64)}
    xc = augment_unit(unit, 4, 10)["x_con"].numpy()[..., 0]  # (20, H, W)
    np.testing.assert_allclose(xc[:10], np.repeat(xc[:1], 10, 0), atol=1e-6)  # one draw per half
    np.testing.assert_allclose(xc[10:], np.repeat(xc[10:11], 10, 0), atol=1e-6)
    assert np.abs(xc[0] - xc[10]).max() > 1e-3  # ... and the two halves' draws differ
