"""Safety net of the PLC joint stage's orchestration (issue 9, deliverable 0), through
``run_joint`` and the files it writes:

* round end: the best state by validation Dice is restored, the running best is reset to the
  last validation Dice (release) or kept (``--plc_global_best``);
* ``--replicate_plc_loss_weighting``, ``--ver 1`` and ``--local_loss_exp_no 0`` reach the loss
  (and the sampler);
* round-0 pseudo-labels made from the ``--init_from`` model when ``--pseudo_label_dir`` is absent;
* initialization copies exactly the trainable ``enc_``/``dec_`` weights of ``--init_from``
  (``--plc_warm_start``: every weight, head and BN statistics included);
* ``--plc_round_floor``: the round's starting model is validated and kept unless a better one comes.

Speed: the compiled training step is replaced by a no-op (its tracing costs tens of seconds on
CPU; the step itself is covered by tests/test_training_stages.py), the validator by a scripted
one, and the loss wiring is checked by calling the stage's own compute function on a fixed batch.
The training package is reached only through :class:`_Hooks` (the stage function, its validator,
its train-step builder); the configurations come from ``tests._training_data.stage_conf``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

import configs
from tests._training_data import stage_conf, tiny_data  # noqa: F401  (session fixture)

NUM_CLASSES, SIZE = 4, 64
PAIRS, ANCHORS = 10, 3  # --bt_size, --no_of_pos_eles
D_INTER = 2 * ANCHORS * (NUM_CLASSES - 1)  # D = 2P(C-1) of the inter-image loss


# ----------------------------------------------------------------------------------------------
# The only place that names internals of the training package: fix the imports here after a
# restructuring.


class _Stop(Exception):
    """Raised by the patched step builder to end ``run_joint`` right after initialization."""


class _Hooks:
    """Runs the joint stage with its validator and/or train-step builder replaced.

    * ``capture(conf)``: runs the stage up to the train-step builder and returns what the builder
      received (the compute function, the trained variables, the BN statistics), i.e. the state
      right after initialization;
    * ``run(conf, dice)``: full run with a no-op step and a validator that returns the scripted
      ``dice`` sequence; the validator also writes the validation step into a marker weight of
      the UNet (``seg_fin_layer`` kernel[0,0,0,0]) and records ``(step, marker found, step in
      W/best/best.json)``, so which weights were restored and when ``W/best`` was written can be
      read back exactly.
    """

    MARKER_LAYER = "seg_fin_layer"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mp = monkeypatch

    @staticmethod
    def run_joint(conf):
        from training.stages.joint import run_joint

        return run_joint(conf)

    def capture(self, conf) -> dict:
        from training.engine import steps

        got: dict = {}

        def builder(strategy, compute_fn, variables, optimizer, **kw):
            got.update(compute=compute_fn, variables=list(variables),
                       state=list(kw.get("state_variables") or []))
            raise _Stop

        self.mp.setattr(steps, "make_train_step", builder)
        with pytest.raises(_Stop):
            self.run_joint(conf)
        return got

    def run(self, conf, dice: list[float]) -> dict:
        from training.engine import runner, steps

        log: dict = {"val": [], "batches": []}
        marker_layer = self.MARKER_LAYER
        workdir = Path(conf.workdir)

        def builder(strategy, compute_fn, variables, optimizer, **kw):
            def step(batch):
                log["batches"].append({k: v.numpy() for k, v in batch.items()})
                return tf.constant(0.5), {"net_loss": tf.constant(0.5)}, tf.constant(True)
            return step

        class ScriptedValidator:
            def __init__(self, data_dir, ids, cfg, model):
                self.kernel = model.get_layer(marker_layer).kernel

            def __call__(self, step):
                value = self.kernel.numpy()
                best = workdir / "best" / "best.json"
                saved = json.loads(best.read_text())["step"] if best.exists() else None
                log["val"].append((int(step), float(value[0, 0, 0, 0]), saved))
                value[0, 0, 0, 0] = step
                self.kernel.assign(value)
                return {"val_dice": dice[len(log["val"]) - 1]}

        self.mp.setattr(steps, "make_train_step", builder)
        self.mp.setattr(runner, "Validator", ScriptedValidator)
        log["summary"] = self.run_joint(conf)
        return log


_UNET: list = []


def _load_unet_weights(weights_file) -> dict[str, np.ndarray]:
    """``{variable path: value}`` of a saved UNet (one model built per module, reloaded)."""
    from models.unet import build_unet

    if not _UNET:
        _UNET.append(build_unet(NUM_CLASSES, (SIZE, SIZE)))
    _UNET[0].load_weights(str(weights_file))
    return {v.path: v.numpy() for v in _UNET[0].weights}


def _marker(weights_file) -> float:
    """The marker weight of a saved UNet (see :class:`_Hooks`)."""
    return float(_load_unet_weights(weights_file)[f"{_Hooks.MARKER_LAYER}/kernel"][0, 0, 0, 0])


# ----------------------------------------------------------------------------------------------
# Inputs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A baseline workdir (config.json + best/model.weights.h5) holding a UNet whose weights and BN
    statistics all differ from a fresh initialization (written directly: training one costs ~30 s)."""
    from models.unet import build_unet

    wd = tmp_path_factory.mktemp("joint_orch") / "baseline"
    unet = build_unet(NUM_CLASSES, (SIZE, SIZE))
    rng = np.random.default_rng(7)  # every weight drawn here: deterministic, no global seed set
    for v in unet.weights:
        shape, name = tuple(v.shape), v.path.rsplit("/", 1)[1]
        if name == "kernel":  # He normal
            value = rng.normal(0.0, math.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.2, shape)
        v.assign(value.astype(np.float32))
    (wd / "best").mkdir(parents=True)
    unet.save_weights(str(wd / "best" / "model.weights.h5"))
    (wd / "config.json").write_text(json.dumps({"stage": "baseline", "dataset": "synthetic",
                                                "num_classes": NUM_CLASSES, "image_size": [SIZE, SIZE]}))
    return wd


def _unlabeled_ids() -> list[str]:
    return list(configs.get_split("synthetic", "tr1", "c1").unlabeled)


def _write_gt_pseudo_labels(data_dir, out_dir) -> None:
    """A pseudo-label directory in the documented layout (README: ``<id>.nii.gz`` int16 in the
    preprocessed geometry + ``manifest.json``) holding the synthetic ground truth; its manifest
    carries the settings of the default flags (no CRF, no TTA filter, seed 0), so a joint run
    reuses it as a complete round directory instead of predicting one (~6 s)."""
    import shutil

    out_dir.mkdir(parents=True)
    ids = _unlabeled_ids()
    for vid in ids:
        shutil.copyfile(data_dir / vid / "label.nii.gz", out_dir / f"{vid}.nii.gz")
    (out_dir / "manifest.json").write_text(json.dumps(
        {"kept": ids, "rejected": [], "crf": False, "tta_filter": False, "f1_threshold": 0.9, "seed": 0}))


def _joint_conf(tiny_data, workdir, baseline, **kw):  # noqa: F811
    """The joint stage's config; the release's initialization and round end unless ``kw`` says otherwise
    (the subject of most tests here), whatever the defaults of the two flags."""
    kw = {"plc_warm_start": False, "plc_round_floor": False, **kw}
    return stage_conf("joint", tiny_data, workdir, init_from=str(baseline), **kw)


# ----------------------------------------------------------------------------------------------
# Round end: best-state restore, running-best reset (release) or global best. Two rounds of three
# iterations, validation after each, with this scripted Dice:
DICE = [0.5, 0.7, 0.6,  # round 0: saved at steps 1 and 2, last 0.6
        0.58, 0.65, 0.63]  # round 1: 0.58 < last of round 0 (0.6) < 0.65 < best of round 0 (0.7)


def _round_end_run(monkeypatch, tiny_data, workdir, baseline, **kw) -> dict:  # noqa: F811
    # Round 1's pseudo-labels are given (the ground truth), so that no prediction runs for them;
    # no augmentation (its tf.data tracing is the slowest part of a round here).
    _write_gt_pseudo_labels(tiny_data, workdir / "pseudo_labels" / "round_1")
    conf = _joint_conf(tiny_data, workdir, baseline, rounds=2, n_iter_per_round=3, val_every=1,
                       ckpt_every=100, data_aug=0, rd_en=0, **kw)
    return _Hooks(monkeypatch).run(conf, DICE)


def _check_round_end(wd, log, saved_seen, best_step):
    """``saved_seen``: step in W/best/best.json as seen by validations 2..6 and after the run."""
    val = json.loads((wd / "metrics.json").read_text())["val"]
    assert [(e["step"], e["val_dice"]) for e in val] == list(zip(range(1, 7), DICE))
    steps_, markers, saved = zip(*log["val"])
    assert steps_ == (1, 2, 3, 4, 5, 6)
    # Each validation finds the weights of the previous one (marker = its step), except the first
    # of round 1: the round end restored the most recent best state (step 2: the round's best),
    # neither the last (step 3) nor an older best (step 1).
    assert markers[1:] == (1, 2, 2, 4, 5)
    best = json.loads((wd / "best" / "best.json").read_text())
    assert saved[1:] + (best["step"],) == saved_seen
    assert best == {"step": best_step, "val_dice": DICE[best_step - 1]}
    assert _marker(wd / "best" / "model.weights.h5") == best_step  # the weights of that validation
    assert _marker(wd / "final" / "model.weights.h5") == 6
    summary = json.loads((wd / "summary.json").read_text())
    assert (summary["step"], summary["best_step"], summary["best_val_dice"], summary["last_val_dice"]) == (
        6, best_step, DICE[best_step - 1], DICE[-1])
    assert summary["rounds"][1]["pseudo_labels"] == str(wd / "pseudo_labels" / "round_1")


def test_release_round_end_and_round0_pseudo_labels_from_init_from(monkeypatch, tiny_data, baseline,  # noqa: F811
                                                                   tmp_path):
    log = _round_end_run(monkeypatch, tiny_data, tmp_path, baseline)
    # Running best reset to the last Dice (0.6) at the round end: 0.58 (step 4) is not saved,
    # 0.65 (step 5) is, although below the best of round 0.
    _check_round_end(tmp_path, log, saved_seen=(1, 2, 2, 2, 5, 5), best_step=5)
    # Inter-image pairs (--local_loss_exp_no 1, default): pair k = (L1, U1) has two label maps.
    assert log["batches"] and all(np.any(b["y_con"][1] != b["y_con"][PAIRS + 1]) for b in log["batches"])

    # Round-0 pseudo-labels without --pseudo_label_dir: W/pseudo_labels/round_0, one file per
    # unlabeled volume, labels of the --init_from model (argmax, --crf false).
    out = tmp_path / "pseudo_labels" / "round_0"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rounds"][0] == {"round": 0, "pseudo_labels": str(out), "kept": 26, "rejected": 0}
    ids = _unlabeled_ids()
    assert sorted(json.loads((out / "manifest.json").read_text())["kept"]) == ids
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{vid}.nii.gz" for vid in ids]
    from workdir import load_unet

    model = load_unet(str(baseline))
    for vid in ids[:2]:
        pl = nib.load(str(out / f"{vid}.nii.gz"))
        img = nib.load(str(tiny_data / vid / "image.nii.gz"))
        assert pl.get_data_dtype() == np.int16 and pl.shape == img.shape
        np.testing.assert_allclose(pl.affine, img.affine, atol=1e-5)
        labels = np.asarray(pl.dataobj)  # (H, W, D)
        assert set(np.unique(labels)) <= set(range(NUM_CLASSES)) and len(np.unique(labels)) > 1
        x = np.transpose(np.asarray(img.dataobj, np.float32), (2, 0, 1))[..., None]  # (D, H, W, 1)
        expected = np.argmax(model(x, training=False).numpy(), -1).transpose(1, 2, 0)  # (H, W, D)
        assert np.mean(labels == expected) > 0.999


def test_plc_global_best_with_intra_image_pairs(monkeypatch, tiny_data, baseline, tmp_path):  # noqa: F811
    pl = tmp_path / "given_pl"
    _write_gt_pseudo_labels(tiny_data, pl)
    wd = tmp_path / "joint"
    log = _round_end_run(monkeypatch, tiny_data, wd, baseline, plc_global_best=True, local_loss_exp_no=0,
                         pseudo_label_dir=str(pl))
    # The best of round 0 (0.7, step 2) stays the best: nothing of round 1 is saved.
    _check_round_end(wd, log, saved_seen=(1, 2, 2, 2, 2, 2), best_step=2)
    assert json.loads((wd / "summary.json").read_text())["rounds"][0]["pseudo_labels"] == str(pl)
    assert not (wd / "pseudo_labels" / "round_0").exists()
    # --local_loss_exp_no 0 reaches the sampler: every pair is one slice with itself.
    assert 0 < len(log["batches"]) == 6 - json.loads((wd / "summary.json").read_text())["skipped"]
    for b in log["batches"]:
        np.testing.assert_array_equal(b["y_con"][:PAIRS], b["y_con"][PAIRS:])


def test_round_floor_never_ends_a_round_below_its_start(monkeypatch, tiny_data, baseline, tmp_path):  # noqa: F811
    _write_gt_pseudo_labels(tiny_data, tmp_path / "pseudo_labels" / "round_1")
    conf = _joint_conf(tiny_data, tmp_path, baseline, rounds=2, n_iter_per_round=3, val_every=1,
                       ckpt_every=100, data_aug=0, rd_en=0, plc_round_floor=True)
    # Validations at steps 0 (round 0 start), 1, 2, 3, 3 (round 1 start: the restored step-2 model),
    # 4, 5, 6. Without the floor the release's reset (0.6) would let 0.65 at step 5 become W/best.
    dice = [0.3, 0.5, 0.7, 0.6, 0.7, 0.58, 0.65, 0.63]
    log = _Hooks(monkeypatch).run(conf, dice)
    steps_, markers, saved = zip(*log["val"])
    assert steps_ == (0, 1, 2, 3, 3, 4, 5, 6)
    # The round-1 start validation sees the restored best of round 0 (step 2) and is saved (step 3).
    assert markers[1:] == (0, 1, 2, 2, 3, 4, 5)
    assert saved[1:] == (0, 1, 2, 2, 3, 3, 3)
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best == {"step": 3, "val_dice": 0.7}
    assert _marker(tmp_path / "best" / "model.weights.h5") == 3  # the start model of round 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [(e["step"], e["round"], e["val_dice"]) for e in metrics["round_start"]] == [(0, 0, 0.3), (3, 1, 0.7)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["best_step"], summary["best_val_dice"]) == (3, 0.7)
    assert [r["start_val_dice"] for r in summary["rounds"]] == [0.3, 0.7]
    # W/best is the model round 1 started from (no validation of round 1 beat 0.7): the summary says so.
    assert summary["kept_round_start"] == 1 and summary["kept_baseline"] is False
    assert [r["kept_start"] for r in summary["rounds"]] == [False, True]


# ----------------------------------------------------------------------------------------------
# Initialization from --init_from, and the loss flags, read from the state the stage hands to its
# train-step builder.


@pytest.fixture(scope="module")
def default_capture(tiny_data, baseline, tmp_path_factory):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        return _Hooks(mp).capture(_joint_conf(tiny_data, tmp_path_factory.mktemp("capture"), baseline))


def test_init_copies_exactly_the_enc_dec_weights(default_capture, baseline):
    base = _load_unet_weights(baseline / "best" / "model.weights.h5")
    trained = {v.path: v.numpy() for v in default_capture["variables"]}
    stats = {v.path: v.numpy() for v in default_capture["state"]}
    copied = {p for p in base if p.startswith(("enc_", "dec_")) and "moving_" not in p}
    assert len(copied) == 2 * 52  # 52 conv + BN layers: conv kernel + bias, BN gamma + beta
    assert copied <= set(trained)
    for path in sorted(copied):  # layer by layer, every trainable weight
        np.testing.assert_array_equal(trained[path], base[path], err_msg=path)
    # Nothing else: the segmentation head is freshly initialized ...
    seg = [p for p in trained if p.startswith("seg_")]
    assert sorted(seg) == sorted(p for p in base if p.startswith("seg_") and "moving_" not in p)
    for path in seg:
        assert np.abs(trained[path] - base[path]).max() > 1e-3, path
    # ... the h head is new (cont_ layers), and every BN statistic (UNet and h) is fresh.
    assert set(trained) - set(base) == {p for p in trained if p.startswith("cont_")} != set()
    assert {p.rsplit("/", 1)[1] for p in stats} == {"moving_mean", "moving_variance"}
    assert {p for p in base if "moving_" in p} < set(stats)
    for path, value in stats.items():
        np.testing.assert_array_equal(value, 0.0 if path.endswith("mean") else 1.0, err_msg=path)


def test_warm_start_copies_every_weight_and_statistic(monkeypatch, tiny_data, baseline, tmp_path):  # noqa: F811
    got = _Hooks(monkeypatch).capture(_joint_conf(tiny_data, tmp_path, baseline, plc_warm_start=True))
    base = _load_unet_weights(baseline / "best" / "model.weights.h5")
    mine = {v.path: v.numpy() for v in got["variables"] + got["state"]}
    assert len(base) == 28 * (2 + 4) + 1 and set(base) <= set(mine)  # 28 conv blocks (conv 2, BN 4) + logits
    for path in sorted(base):  # head and moving statistics included
        np.testing.assert_array_equal(mine[path], base[path], err_msg=path)


def test_warm_start_carries_the_baselines_adam_moments(monkeypatch, tiny_data, baseline, tmp_path):  # noqa: F811
    """The baseline's last checkpoint holds an Adam over its UNet: its moments and iteration count
    reach the joint optimizer's UNet slots; the h head's slots stay zero."""
    import shutil

    from models.unet import build_unet
    from training.engine import steps

    wd = tmp_path / "baseline"
    shutil.copytree(baseline, wd)
    unet = build_unet(NUM_CLASSES, (SIZE, SIZE))
    opt = steps.make_optimizer(1e-3, unet.trainable_variables, tf.distribute.get_strategy())
    rng = np.random.default_rng(3)
    for slot in opt._momentums + opt._velocities:
        slot.assign(rng.uniform(0.1, 1.0, tuple(slot.shape)).astype(np.float32))
    opt.iterations.assign(37)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=unet, optimizer=opt), str(wd / "ckpt"), 1).save(37)

    got: dict = {}

    def capture(strategy, compute_fn, variables, optimizer, **kw):
        got.update(variables=list(variables), optimizer=optimizer)
        raise _Stop

    monkeypatch.setattr(steps, "make_train_step", capture)
    with pytest.raises(_Stop):
        _Hooks.run_joint(_joint_conf(tiny_data, tmp_path / "joint", wd, plc_warm_start=True))
    adam, n = got["optimizer"], len(unet.trainable_variables)
    assert int(adam.iterations.numpy()) == 37 and len(got["variables"]) > n
    for mine, theirs in zip(adam._momentums[:n] + adam._velocities[:n], opt._momentums + opt._velocities):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for slot in adam._momentums[n:] + adam._velocities[n:]:  # the h head: fresh
        assert not np.any(slot.numpy())

    # Without --plc_warm_start (the release): a fresh Adam.
    got.clear()
    with pytest.raises(_Stop):
        _Hooks.run_joint(_joint_conf(tiny_data, tmp_path / "joint_release", wd))
    assert int(got["optimizer"].iterations.numpy()) == 0
    assert not any(np.any(s.numpy()) for s in got["optimizer"]._momentums)


def _save_state(directory, step, unet, iterations, seed, optimizer=True) -> list:
    """A training checkpoint ``directory/ckpt-<step>`` of ``unet`` (and an Adam over it whose moments
    are drawn from ``seed`` and whose step count is ``iterations``); returns the Adam's slots."""
    from training.engine import steps

    objects = {"model": unet}
    slots = []
    if optimizer:
        opt = steps.make_optimizer(1e-3, unet.trainable_variables, tf.distribute.get_strategy())
        rng = np.random.default_rng(seed)
        for slot in opt._momentums + opt._velocities:
            slot.assign(rng.uniform(0.1, 1.0, tuple(slot.shape)).astype(np.float32))
        opt.iterations.assign(iterations)
        objects["optimizer"] = opt
        slots = [v.numpy() for v in opt._momentums + opt._velocities]
    tf.train.CheckpointManager(tf.train.Checkpoint(**objects), str(directory), 1).save(step)
    return slots


def _warm_start_capture(monkeypatch, tiny_data, workdir, init_from) -> dict:  # noqa: F811
    from training.engine import steps

    got: dict = {}

    def capture(strategy, compute_fn, variables, optimizer, **kw):
        got.update(variables=list(variables), state=list(kw.get("state_variables") or []), optimizer=optimizer)
        raise _Stop

    monkeypatch.setattr(steps, "make_train_step", capture)
    with pytest.raises(_Stop):
        _Hooks.run_joint(_joint_conf(tiny_data, workdir, init_from, plc_warm_start=True))
    return got


def _adam_slots(adam, n) -> list:
    return [v.numpy() for v in adam._momentums[:n] + adam._velocities[:n]]


def test_warm_start_takes_weights_and_adam_from_the_best_state(monkeypatch, tiny_data, baseline, tmp_path,  # noqa: F811
                                                              capsys):
    """Issue 20: --plc_warm_start continues one checkpoint, the baseline's W/best_state (saved with
    W/best): its UNet and its Adam moments and step count; not the moments of the last checkpoint."""
    import shutil

    from models.unet import build_unet

    wd = tmp_path / "baseline"
    shutil.copytree(baseline, wd)
    best = build_unet(NUM_CLASSES, (SIZE, SIZE))
    best.load_weights(str(wd / "best" / "model.weights.h5"))
    (wd / "best" / "best.json").write_text(json.dumps({"step": 30, "val_dice": 0.5}))
    best_slots = _save_state(wd / "best_state", 30, best, iterations=30, seed=1)
    _save_state(wd / "ckpt", 37, build_unet(NUM_CLASSES, (SIZE, SIZE)), iterations=37, seed=2)  # the last state
    capsys.readouterr()
    got = _warm_start_capture(monkeypatch, tiny_data, tmp_path / "joint", wd)
    adam, n = got["optimizer"], len(best.trainable_variables)
    assert int(adam.iterations.numpy()) == 30
    for mine, theirs in zip(_adam_slots(adam, n), best_slots):
        np.testing.assert_array_equal(mine, theirs)
    base = _load_unet_weights(wd / "best" / "model.weights.h5")
    mine = {v.path: v.numpy() for v in got["variables"] + got["state"]}
    for path in sorted(base):
        np.testing.assert_array_equal(mine[path], base[path], err_msg=path)
    assert "warning" not in capsys.readouterr().err


def test_warm_start_fallbacks_say_what_they_use(monkeypatch, tiny_data, baseline, tmp_path, capsys):  # noqa: F811
    """A baseline without W/best_state (made before stages kept it): weights and Adam state both from
    its last checkpoint, with one line saying so; a checkpoint without an optimizer: one line saying
    that Adam starts fresh."""
    import shutil

    from models.unet import build_unet

    wd = tmp_path / "baseline"
    shutil.copytree(baseline, wd)
    last = build_unet(NUM_CLASSES, (SIZE, SIZE))
    last_slots = _save_state(wd / "ckpt", 37, last, iterations=37, seed=2)
    capsys.readouterr()
    got = _warm_start_capture(monkeypatch, tiny_data, tmp_path / "joint", wd)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(err) == 1 and "has no best_state/" in err[0] and str(wd / "ckpt" / "ckpt-37") in err[0], err
    adam, n = got["optimizer"], len(last.trainable_variables)
    assert int(adam.iterations.numpy()) == 37
    for mine, theirs in zip(_adam_slots(adam, n), last_slots):
        np.testing.assert_array_equal(mine, theirs)
    mine = {v.path: v.numpy() for v in got["variables"] + got["state"]}
    for v in last.weights:  # the weights of that checkpoint, not of W/best
        np.testing.assert_array_equal(mine[v.path], v.numpy(), err_msg=v.path)

    wd2 = tmp_path / "baseline_no_adam"
    shutil.copytree(baseline, wd2)
    _save_state(wd2 / "best_state", 3, build_unet(NUM_CLASSES, (SIZE, SIZE)), 0, 0, optimizer=False)
    got = _warm_start_capture(monkeypatch, tiny_data, tmp_path / "joint2", wd2)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(err) == 1 and "no Adam moments" in err[0] and "Adam starts fresh" in err[0], err
    assert int(got["optimizer"].iterations.numpy()) == 0


def test_round_floor_with_a_non_finite_start_says_so(monkeypatch, tiny_data, baseline, tmp_path, capsys):  # noqa: F811
    _write_gt_pseudo_labels(tiny_data, tmp_path / "pl")
    conf = _joint_conf(tiny_data, tmp_path / "joint", baseline, rounds=1, n_iter_per_round=1, val_every=1,
                       ckpt_every=100, data_aug=0, rd_en=0, plc_round_floor=True, pseudo_label_dir=str(tmp_path / "pl"))
    _Hooks(monkeypatch).run(conf, [float("nan"), 0.5])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert err == ["warning: [joint] round 0: the validation Dice of its starting model is nan: this round has no "
                   "floor (--plc_round_floor); it keeps its best validated model as without the flag"]


def _fixed_batch(valid_pairs, identical_pairs=False, seed=0) -> dict[str, tf.Tensor]:
    """One joint batch: 4 labeled slices and 10 contrastive pairs, every class in every image;
    the P anchors of each class are valid only in ``valid_pairs``."""
    rng = np.random.default_rng(seed)
    n_lab, n_con = 4, 2 * PAIRS

    def label_maps(n):  # four quadrant classes, shifted at random
        yy, xx = np.mgrid[:SIZE, :SIZE]
        base = (yy >= SIZE // 2) * 2 + (xx >= SIZE // 2)  # (H, W) classes 0..3
        return np.stack([np.roll(base, rng.integers(-12, 12, 2), axis=(0, 1)) for _ in range(n)])

    y_lab, y_con = label_maps(n_lab), label_maps(n_con)  # (N, H, W)
    x_lab = rng.normal(size=(n_lab, SIZE, SIZE, 1)) + y_lab[..., None]
    x_con = rng.normal(size=(n_con, SIZE, SIZE, 1)) + y_con[..., None]
    if identical_pairs:
        x_con[PAIRS:], y_con[PAIRS:] = x_con[:PAIRS], y_con[:PAIRS]
    yx = np.zeros((n_con, NUM_CLASSES - 1, ANCHORS, 2), np.int32)
    for n in range(n_con):
        for c in range(1, NUM_CLASSES):
            pix = np.argwhere(y_con[n] == c)
            yx[n, c - 1] = pix[rng.choice(len(pix), ANCHORS)]
    valid = np.zeros((n_con, NUM_CLASSES - 1, ANCHORS), bool)
    for k in valid_pairs:
        valid[[k, PAIRS + k]] = True
    eye = np.eye(NUM_CLASSES, dtype=np.float32)
    return {"x_lab": tf.constant(x_lab, tf.float32), "y_lab": tf.constant(eye[y_lab]),
            "x_con": tf.constant(x_con, tf.float32), "y_con": tf.constant(eye[y_con]),
            "anchor_yx": tf.constant(yx), "anchor_valid": tf.constant(valid)}


def _capture_like(monkeypatch, reference, conf) -> dict:
    """Capture of ``conf`` with the weights of ``reference`` (fresh heads differ between runs)."""
    got = _Hooks(monkeypatch).capture(conf)
    for mine, theirs in zip(got["variables"] + got["state"], reference["variables"] + reference["state"]):
        assert mine.path == theirs.path
        mine.assign(theirs)
    return got


def _losses(capture, batch, grads=False):
    with tf.GradientTape() as tape:
        loss, mets = capture["compute"](batch, 1)  # one replica
    out = {k: float(v) for k, v in mets.items()}
    assert out["net_loss"] == pytest.approx(float(loss))
    if grads:
        out["grads"] = {v.path: g.numpy() for v, g in
                        zip(capture["variables"], tape.gradient(loss, capture["variables"]))}
    return out


def test_replicate_plc_loss_weighting_reaches_the_loss(default_capture, monkeypatch, tiny_data, baseline,  # noqa: F811
                                                       tmp_path):
    conf = _joint_conf(tiny_data, tmp_path, baseline, replicate_plc_loss_weighting=True)
    replicate = _capture_like(monkeypatch, default_capture, conf)
    # Default: mean over pairs, S_k / (B D) each. Release: pair k weighted 1 / (B D^(B-k)).
    only7, only9 = (_losses(default_capture, _fixed_batch([k])) for k in (7, 9))
    both = _fixed_batch([7, 9])
    default, release = _losses(default_capture, both), _losses(replicate, both)
    assert default["local_loss"] == pytest.approx(only7["local_loss"] + only9["local_loss"], rel=1e-5)
    expected = only7["local_loss"] / D_INTER**2 + only9["local_loss"]  # weights D^-3 / B and D^-1 / B
    assert release["local_loss"] == pytest.approx(expected, rel=1e-5)
    assert only7["local_loss"] > 0.01  # the weighting makes a visible difference
    assert release["seg_loss"] == pytest.approx(default["seg_loss"], rel=1e-6)
    assert release["net_loss"] == pytest.approx(release["seg_loss"] + 0.1 * release["local_loss"], rel=1e-6)


def test_ver_1_stops_the_gradient_through_the_prototypes(default_capture, monkeypatch, tiny_data, baseline,  # noqa: F811
                                                         tmp_path):
    ver1 = _capture_like(monkeypatch, default_capture, _joint_conf(tiny_data, tmp_path, baseline, ver=1))
    batch = _fixed_batch(range(PAIRS))
    g0, g1 = _losses(default_capture, batch, grads=True), _losses(ver1, batch, grads=True)
    assert g1["net_loss"] == pytest.approx(g0["net_loss"], rel=1e-6)  # same value ...
    for path, grad in g0["grads"].items():
        if path.startswith("seg_"):  # ... the segmentation head sees the Dice loss only ...
            np.testing.assert_allclose(g1["grads"][path], grad, rtol=1e-4, atol=1e-7, err_msg=path)
        elif path.startswith(("cont_", "dec_c1_a")):  # ... the h head and what feeds it: other gradients
            rel = np.abs(g1["grads"][path] - grad).max() / np.abs(grad).max()
            assert rel > 1e-2, path


def test_intra_image_loss_reaches_the_loss(default_capture, monkeypatch, tiny_data, baseline, tmp_path):  # noqa: F811
    intra = _capture_like(monkeypatch, default_capture,
                          _joint_conf(tiny_data, tmp_path, baseline, local_loss_exp_no=0))
    # Pairs of identical images: the inter loss adds the partner's (equal) prototypes to every
    # denominator (+ ln 2) and a cross term per anchor equal to the own one, over twice the D:
    # L_inter = L_intra + 2 ln 2.
    batch = _fixed_batch(range(PAIRS), identical_pairs=True)
    li, le = _losses(intra, batch)["local_loss"], _losses(default_capture, batch)["local_loss"]
    assert le - li == pytest.approx(2 * math.log(2), abs=1e-4)
