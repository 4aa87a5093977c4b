"""The stage scripts end to end through their real flags (in this process, as ``python <script>``
runs them), on the tiny synthetic dataset: both pre-training stages of ``train_pretrain.py`` (the
global one with ``--num_replicas 2`` through the real distribution path, in a subprocess: logical
devices must be configured before TensorFlow starts), fine-tuning from each kind of
``--init_from`` and its errors, the exit status 3 of a diverged run, and one learning run.

Only public surfaces are read: exit status, stderr, and the files a stage writes (config.json,
summary.json, metrics.json, best/, final/, ckpt/), with the loader evaluate.py uses."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._scripts import ROOT, run_script
from tests._shared import computed_once
from tests._training_data import tiny_data  # noqa: F401  (session fixture)

ALL_PREFIXES = ("enc_", "dec_", "seg_")
# What fine-tuning copies from each kind of source (README "Stage order"), layer-name prefixes:
ENCODER = ("enc_",)
ENCODER_AND_TWO_DECODER_BLOCKS = ("enc_", "dec_dc6", "dec_c5_", "dec_dc5", "dec_c4_")  # l = 2


def _stage(script: str, stage: str, data: Path, workdir: Path, *args: str):
    return run_script(script, [f"--stage={stage}", "--dataset=synthetic", f"--data_dir={data}",
                               f"--workdir={workdir}", "--jit_compile=false", *args], quiet=True)


def _json(path: Path):
    return json.loads(path.read_text())


def _unet(path: Path | str):
    """The UNet a workdir / weights file / checkpoint holds, loaded as evaluate.py --model does."""
    from workdir import load_model

    return load_model(str(path), "synthetic").model


@functools.lru_cache(maxsize=None)
def _trainable(path: Path | str) -> dict[str, list[np.ndarray]]:
    """Layer name -> trainable weights of the UNet at ``path`` (layers with weights only)."""
    return {layer.name: [w.numpy() for w in layer.trainable_weights] for layer in _unet(path).layers
            if layer.trainable_weights}


def _equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):  # noqa: F811
    """``python train_pretrain.py --stage global --num_replicas 2`` (a subprocess: the logical
    devices must be configured before TensorFlow starts), then ``--stage local`` from it (l = 2)
    in this process; checkpoints every step. Computed once per test run (tests/_shared.py)."""

    def compute(root: Path) -> dict:
        import keras

        keras.utils.set_random_seed(1)
        wg, wl = root / "gcl", root / "lcl"
        cmd = [sys.executable, "train_pretrain.py", "--stage=global", "--dataset=synthetic",
               f"--data_dir={tiny_data}", f"--workdir={wg}", "--jit_compile=false", "--num_replicas=2", "--n_iter=2",
               "--bt_size=4", "--temp_fac=0.5", "--ckpt_every=1", "--log_every=1"]
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
                              text=True, timeout=900)
        loc = _stage("train_pretrain.py", "local", tiny_data, wl, f"--init_from={wg}", "--no_of_decoder_blocks=2",
                     "--n_iter=3", "--max_steps=2", "--ckpt_every=1", "--log_every=1")
        return {"global_code": proc.returncode, "global_stdout": proc.stdout[-3000:],
                "global_stderr": proc.stderr[-3000:], "local_code": loc.code}

    root, result = computed_once(tmp_path_factory, "pretrain", compute)
    return result, root / "gcl", root / "lcl"


def test_global_stage_on_two_replicas(pretrained):
    """``--num_replicas 2`` through the real distribution path of a stage script: two logical CPU
    devices, each replica with its own complete G^D batch (whole partition groups)."""
    result, wg, _ = pretrained
    assert result["global_code"] == 0, result["global_stderr"]
    summary = _json(wg / "summary.json")
    assert (summary["replicas"], summary["step"], summary["nonfinite"]) == (2, 2, 0)
    assert np.isfinite(summary["final_loss"])
    assert _json(wg / "config.json")["num_replicas"] == 2
    assert "replicas=2" in result["global_stdout"].strip().splitlines()[-1]


def test_pretrain_script_global_then_local(pretrained):
    result, wg, wl = pretrained
    assert (result["global_code"], result["local_code"]) == (0, 0)
    conf = _json(wg / "config.json")
    assert (conf["stage"], conf["bt_size"], conf["temp_fac"], conf["n_iter"]) == ("global", 4, 0.5, 2)
    assert _json(wg / "summary.json")["step"] == 2
    assert [e["step"] for e in _json(wg / "metrics.json")["train"]] == [1, 2]  # --log_every=1
    # The global stage trains the encoder only: between step 1 and 2 the encoder moved, the decoder not.
    g1, g2 = _trainable(wg / "ckpt" / "ckpt-1"), _trainable(wg)  # wg: its final/
    assert not _equal(g1["enc_c1_a_conv"], g2["enc_c1_a_conv"]) and not _equal(g1["enc_c6_b_conv"], g2["enc_c6_b_conv"])
    assert all(_equal(g1[n], g2[n]) for n in g1 if not n.startswith("enc_"))

    conf = _json(wl / "config.json")
    assert (conf["stage"], conf["no_of_decoder_blocks"], conf["init_from"], conf["max_steps"]) == (
        "local", 2, str(wg), 2)
    summary = _json(wl / "summary.json")
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])  # --max_steps caps --n_iter
    l1, l2 = _trainable(wl / "ckpt" / "ckpt-1"), _trainable(wl)
    # Encoder copied from the global stage and frozen; decoder blocks 1..2 trained, block 3 and later not.
    assert all(_equal(l2[n], g2[n]) for n in l2 if n.startswith("enc_"))
    for name in ("dec_dc6_conv", "dec_c5_a_conv", "dec_c4_b_conv"):
        assert not _equal(l1[name], l2[name]), name
    assert all(_equal(l1[n], l2[n]) for n in l1 if not n.startswith(ENCODER_AND_TWO_DECODER_BLOCKS))


@pytest.fixture(scope="module")
def learned(tiny_data, tmp_path_factory):  # noqa: F811
    """A supervised baseline of a few dozen steps (8 labeled volumes, deterministic seeds);
    computed once per test run (tests/_shared.py)."""

    def compute(root: Path) -> dict:
        import keras

        keras.utils.set_random_seed(0)  # the UNet's initial weights
        run = _stage("train_selftrain.py", "baseline", tiny_data, root / "baseline", "--no_of_tr_imgs=tr8",
                     "--batch_size=10", "--data_aug=0", "--n_iter=40", "--val_every=1000", "--ckpt_every=1000",
                     "--seed=0")
        return {"code": run.code}

    root, result = computed_once(tmp_path_factory, "learn", compute)
    return result["code"], root / "baseline"


# Validation Dice (mean foreground Dice at native resolution, 4 volumes) after 40 steps: measured
# 0.31 (after 1 step: 0.08; unseeded initial weights gave 0.20 after 40 steps).
LEARNED_DICE_FLOOR = 0.15


def test_a_few_dozen_steps_learn(learned):
    code, wd = learned
    assert code == 0
    metrics = _json(wd / "metrics.json")
    losses = [e["loss"] for e in metrics["train"]]  # means over 10 steps
    assert [e["step"] for e in metrics["train"]] == [10, 20, 30, 40]
    assert losses[-1] < 0.7 * losses[0], losses  # measured 0.78 -> 0.41
    val = {e["step"]: e["val_dice"] for e in metrics["val"]}
    assert set(val) == {1, 40}
    assert val[40] > LEARNED_DICE_FLOOR > val[1], val
    assert _json(wd / "best" / "best.json") == {"step": 40, "val_dice": val[40]}


@pytest.mark.parametrize("kind, prefixes", [
    ("global", ENCODER),
    ("local", ENCODER_AND_TWO_DECODER_BLOCKS),
    ("baseline", ALL_PREFIXES),
    ("checkpoint", ENCODER_AND_TWO_DECODER_BLOCKS),  # W_lcl/ckpt/ckpt-1: a local stage's checkpoint
])
def test_fine_tuning_copies_what_each_kind_of_source_holds(kind, prefixes, pretrained, learned, tiny_data,  # noqa: F811
                                                           tmp_path):
    """``--n_iter 0``: the stage only initializes, so final/ holds exactly the initial weights."""
    _, wg, wl = pretrained
    source = {"global": wg, "local": wl, "baseline": learned[1], "checkpoint": wl / "ckpt" / "ckpt-1"}[kind]
    wf = tmp_path / "ft"
    run = _stage("train_selftrain.py", "baseline", tiny_data, wf, f"--init_from={source}", "--n_iter=0",
                 "--no_of_tr_imgs=tr1")
    assert run.code == 0
    src, got = _trainable(source), _trainable(wf / "final" / "model.weights.h5")
    copied = [n for n in got if n.startswith(prefixes)]
    assert _json(wf / "summary.json")["transferred_layers"] == len(copied)
    for name in got:
        if name in copied:
            assert _equal(got[name], src[name]), name
        elif name.endswith(("_conv", "_layer")):  # not copied: a fresh random kernel
            assert not np.array_equal(got[name][0], src[name][0]), name
    if kind == "checkpoint":  # the checkpoint given, not the workdir's final weights
        final = _trainable(wl)
        assert not _equal(got["dec_c5_a_conv"], final["dec_c5_a_conv"])


def _fake_workdir(path: Path, **conf) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(conf))
    return path


@pytest.mark.parametrize("source, message", [
    ("missing", "no such file or directory"),
    ("data", "no config.json"),
    ("pseudolabel", "workdir of stage 'pseudolabel' cannot initialize a supervised stage"),
    ("three_classes", "3 classes, expected 4"),
])
def test_fine_tuning_source_errors(source, message, tiny_data, tmp_path, capsys):  # noqa: F811
    path = {"missing": tmp_path / "missing",
            "data": tiny_data,
            "pseudolabel": _fake_workdir(tmp_path / "pl", stage="pseudolabel", dataset="synthetic", num_classes=4),
            "three_classes": _fake_workdir(tmp_path / "b3", stage="baseline", dataset="prostate_md", num_classes=3),
            }[source]
    wf = tmp_path / "ft"
    assert _stage("train_selftrain.py", "baseline", tiny_data, wf, f"--init_from={path}", "--n_iter=1").code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --init_from={path}: ") and message in err[0], err
    assert not wf.exists()  # refused before anything is written


def test_a_rerun_under_other_settings_is_refused_in_one_line(tiny_data, tmp_path, capsys):  # noqa: F811
    """Issue 20: ``train_selftrain.py`` in a workdir recorded with other training settings exits with
    status 2 and one line naming each differing setting with both values, before anything is
    written; a corrupt config.json is an error too, and stays as it is."""
    import configs
    from tests._scripts import stage_config
    from training.engine.env import dataset_fields

    wd = tmp_path / "w"
    args = [f"--data_dir={tiny_data}", f"--workdir={wd}", "--dataset=synthetic", "--jit_compile=false",
            "--no_of_tr_imgs=tr1", "--n_iter=3"]
    conf = stage_config("baseline", args)
    record = json.dumps({**conf.to_json(), **dataset_fields(configs.get_config("synthetic"))})
    wd.mkdir()
    (wd / "config.json").write_text(record)
    code = _stage("train_selftrain.py", "baseline", tiny_data, wd, *args[3:], "--lr_seg=0.01", "--seed=1",
                  "--crf=false").code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --workdir {wd}: holds a run with other training settings (seed: 0 -> 1, lr_seg: 0.001 "
                   f"-> 0.01, crf: True -> False); use the recorded settings, a new --workdir, or --override_config "
                   f"to resume it under the new ones"], err
    assert (wd / "config.json").read_text() == record and sorted(p.name for p in wd.iterdir()) == ["config.json"]
    (wd / "config.json").write_text('{"stage": "baseline",')
    assert _stage("train_selftrain.py", "baseline", tiny_data, wd, *args[3:]).code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {wd / 'config.json'}: not valid JSON"), err
    assert (wd / "config.json").read_text() == '{"stage": "baseline",'


def test_a_diverged_stage_exits_with_status_3(tiny_data, tmp_path, capsys):  # noqa: F811
    """A learning rate of 1e30 makes every loss after the first step non-finite; 20 in a row stop
    the script with status 3, the last good state checkpointed, no summary or final weights."""
    wd = tmp_path / "w"
    run = _stage("train_selftrain.py", "baseline", tiny_data, wd, "--lr_seg=1e30", "--n_iter=40", "--batch_size=2",
                 "--data_aug=0", "--no_of_tr_imgs=tr1", "--val_every=0", "--ckpt_every=10")
    assert run.code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 20 consecutive non-finite losses at step 21; stopped.") and str(wd / "ckpt") in err
    assert not (wd / "summary.json").exists() and not (wd / "final").exists()
    assert "ckpt-20" in (wd / "ckpt" / "checkpoint").read_text()
    model = _unet(wd / "ckpt")  # the state after the one good step
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
