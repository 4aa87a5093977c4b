"""Tests of evaluation.inference, evaluation.evaluator and the evaluate.py script."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import configs
from data import store
from common.errors import InputError
from evaluation import inference
from evaluation.evaluator import run_evaluation
from evaluation.metrics import dice_per_class
from tests import _eval_data as ed
from workdir import load_model

REPO = Path(__file__).resolve().parents[1]
VAL_IDS = ("027", "028", "029", "030")  # validation ids of the synthetic split tr1/c1


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return ed.write_preprocessed(tmp_path_factory.mktemp("pp") / "data", VAL_IDS)


@pytest.fixture(scope="module")
def cfg():
    return configs.get_config("synthetic")


def test_predict_volume_chunks_match_single_pass():
    model = ed.random_unet(1)
    image = np.random.default_rng(0).random((23, 64, 64)).astype(np.float32)
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return inference.keras_predictor(model)(x)

    probs = inference.predict_volume(counting, image, chunk=20)
    assert calls == [20, 3] and probs.shape == (23, 64, 64, 4)
    import tensorflow as tf

    ref = tf.nn.softmax(model(image[..., None], training=False)).numpy()  # inference-mode BN
    np.testing.assert_allclose(probs, ref, atol=2e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert inference.keras_predictor(model) is inference.keras_predictor(model)  # cached, no retrace
    with pytest.raises(InputError, match="volume"):
        inference.predict_volume(counting, image[0])


def test_keras_predictor_does_not_keep_model_alive():
    import gc
    import weakref

    from models.unet import build_unet

    model = build_unet(2)
    predict = inference.keras_predictor(model)
    assert predict(np.zeros((1, 32, 32, 1), np.float32)).shape == (1, 32, 32, 2)
    ref = weakref.ref(model)
    del model, predict
    gc.collect()
    assert ref() is None  # the per-model cache must not leak every validated model


def test_evaluate_volumes_oracle_native_dice(data_dir, cfg):
    res = inference.evaluate_volumes(ed.oracle_predictor, data_dir, VAL_IDS, cfg)
    assert res.dice.shape == (4, 4) and res.ids == VAL_IDS
    # The only loss is the resampling round trip (2.5 mm grid vs ~3 mm native grid).
    assert res.mean_dice > 0.9, res.dice
    np.testing.assert_allclose(res.mean_dice, np.mean(res.volume_scores))
    np.testing.assert_allclose(res.volume_scores, np.nanmean(res.dice[:, 1:], axis=1))


def test_evaluate_volumes_empty_prediction(data_dir, cfg):
    def background(x):
        return ed.oracle_predictor(np.zeros_like(x))

    res = inference.evaluate_volumes(background, data_dir, VAL_IDS[:1], cfg)
    np.testing.assert_array_equal(res.dice[0, 1:], 0.0)  # missed structures score 0
    assert res.mean_dice == 0.0


def test_run_evaluation_outputs(tmp_path, data_dir, cfg):
    out = tmp_path / "eval"
    summary = run_evaluation(ed.oracle_predictor, data_dir, VAL_IDS, cfg, out, num_plot_volumes=2,
                             extra={"dataset": "synthetic", "split": "val"}, verbose=False)
    assert summary["n_volumes"] == 4 and summary["dataset"] == "synthetic"
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "dice_boxplot.png", "overlay_027.png", "overlay_028.png"]
    rows = list(csv.DictReader((out / "per_volume.csv").read_text().splitlines()))
    assert [r["id"] for r in rows] == list(VAL_IDS)
    for row, vid in zip(rows, VAL_IDS):
        native = store.load_native_label(data_dir, vid)
        pred = nib.load(str(out / "predictions" / f"{vid}.nii.gz"))
        np.testing.assert_array_equal(pred.affine, native.affine)
        assert pred.header.get_zooms() == native.header.get_zooms()
        assert pred.get_data_dtype() == np.int16 and pred.shape == native.shape
        dice = dice_per_class(np.asarray(native.dataobj), np.asarray(pred.dataobj), 4)
        for c, s in enumerate(cfg.struct_names, start=1):
            assert float(row[f"dice_{s}"]) == pytest.approx(dice[c], abs=1e-6)
        # boundaries differ by at most about one native voxel (spacing 3.0 x 2.8 x 8 mm)
        assert 0.0 <= float(row["hd95_mm_lv"]) <= 3.0 + 1e-6
        assert float(row["hd95_vox_lv"]) <= 1.0 + 1e-6
    assert summary["overall"]["dice"]["mean"] > 0.9


def test_run_evaluation_surface_metrics_use_header_spacing(tmp_path, data_dir, cfg):
    from medpy.metric import binary as medpy_binary  # independent implementation (test-only dependency)

    def shifted(x):  # the oracle, displaced by 3 network pixels: non-zero surface distances
        return ed.oracle_predictor(np.roll(x, 3, axis=2))

    vid = VAL_IDS[0]
    summary = run_evaluation(shifted, data_dir, [vid], cfg, tmp_path / "ev", num_plot_volumes=0, verbose=False)
    row = next(csv.DictReader((tmp_path / "ev" / "per_volume.csv").read_text().splitlines()))
    native = store.load_native_label(data_dir, vid)
    spacing = native.header.get_zooms()
    assert len(set(spacing)) == 3  # anisotropic: voxel units would give other numbers
    gt = np.asarray(native.dataobj)
    pred = np.asarray(nib.load(str(tmp_path / "ev" / "predictions" / f"{vid}.nii.gz")).dataobj)
    directed = getattr(medpy_binary, "__surface_distances")  # medpy's own directed distances (module-private)

    def monai_hd95(a, b, sampling=None):  # MONAI's definition: the larger of the two directed P95
        return max(np.percentile(directed(a, b, sampling), 95), np.percentile(directed(b, a, sampling), 95))

    differ = 0
    for c, s in enumerate(cfg.struct_names, start=1):
        a, b = pred == c, gt == c
        hd_mm = medpy_binary.hd95(a, b, voxelspacing=spacing)
        assert hd_mm > 0
        assert float(row[f"hd95_mm_{s}"]) == pytest.approx(hd_mm, abs=1e-5)
        assert float(row[f"assd_mm_{s}"]) == pytest.approx(medpy_binary.assd(a, b, voxelspacing=spacing), abs=1e-5)
        assert float(row[f"hd95_vox_{s}"]) == pytest.approx(medpy_binary.hd95(a, b), abs=1e-5)
        assert summary["structures"][s]["hd95_mm"]["mean"] == pytest.approx(hd_mm, abs=1e-9)
        max_mm = monai_hd95(a, b, spacing)
        assert float(row[f"hd95_max_mm_{s}"]) == pytest.approx(max_mm, abs=1e-5)
        assert float(row[f"hd95_max_vox_{s}"]) == pytest.approx(monai_hd95(a, b), abs=1e-5)
        assert summary["structures"][s]["hd95_max_mm"]["mean"] == pytest.approx(max_mm, abs=1e-9)
        differ += abs(max_mm - hd_mm) > 1e-3
    assert differ  # the two definitions give different numbers on this prediction
    assert float(row["hd95_mm_lv"]) != pytest.approx(float(row["hd95_vox_lv"]))


def test_predict_on_raw_file_equals_evaluation(tmp_path, data_dir, cfg):
    from evaluation.segment import segment_file

    model = ed.random_unet(6)
    run_evaluation(model, data_dir, VAL_IDS[1:2], cfg, tmp_path / "ev", num_plot_volumes=0, verbose=False)
    image, _, affine = ed.raw_volume(1, shape=(54, 53, 3))  # the raw volume behind VAL_IDS[1]
    nib.save(ed.nifti(image, affine, np.float32), str(tmp_path / "raw.nii.gz"))
    labels = segment_file(inference.keras_predictor(model), cfg, tmp_path / "raw.nii.gz", tmp_path / "seg.nii.gz")
    evaluated = np.asarray(nib.load(str(tmp_path / "ev" / "predictions" / f"{VAL_IDS[1]}.nii.gz")).dataobj)
    assert len(np.unique(labels)) > 1  # a non-trivial segmentation
    np.testing.assert_array_equal(labels, evaluated)


def test_load_from_training_checkpoint(tmp_path, data_dir):
    import tensorflow as tf

    model = ed.random_unet(7)
    wd = ed.write_workdir(tmp_path / "wd", model, data_dir)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer,
                                                             step=tf.Variable(3, dtype=tf.int64)),
                                         str(wd / "ckpt"), max_to_keep=2)
    manager.save(checkpoint_number=3)
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    ref = model(x, training=False).numpy()
    for path in (wd / "ckpt", wd / "ckpt" / "ckpt-3"):
        loaded, dataset = load_model(str(path))
        assert dataset == "synthetic"
        np.testing.assert_allclose(loaded(x, training=False).numpy(), ref, atol=1e-6)
    with pytest.raises(InputError, match="cannot restore a 3-class UNet"):
        load_model(str(wd / "ckpt"), dataset="prostate_md")
    (tmp_path / "empty_ckpt").mkdir()
    (tmp_path / "empty_ckpt" / "checkpoint").write_text("")
    with pytest.raises(InputError, match="no checkpoint"):
        load_model(str(tmp_path / "empty_ckpt"), dataset="synthetic")


def test_evaluate_script(tmp_path, data_dir):
    wd = ed.write_workdir(tmp_path / "wd", ed.random_unet(2), data_dir)
    proc = subprocess.run([sys.executable, "evaluate.py", f"--workdir={wd}", "--split=val", "--num_plot_volumes=1",
                           f"--export_dir={tmp_path / 'export'}", "--precision=mixed_bfloat16"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = wd / "eval_val"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ids"] == list(VAL_IDS)  # resolved from the workdir's split (tr1/c1)
    assert summary["split"] == "val" and summary["no_of_tr_imgs"] == "tr1"
    assert summary["precision"] == "mixed_bfloat16"
    assert (out / "plots" / "training_curves.png").is_file()
    assert (out / "plots" / "overlay_027.png").is_file()
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 4
    assert "mean" in proc.stdout and "Dice" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("structure"))
    assert "HD95 medpy (mm)" in header and "HD95 MONAI (mm)" in header and "HD95 MONAI (vox)" in header
    assert "HD95 MONAI: max of the two directed P95" in proc.stdout  # the legend names both definitions
    assert {"hd95_mm", "hd95_max_mm", "hd95_vox", "hd95_max_vox"} <= set(summary["overall"])
    assert "MONAI" in summary["metric_definitions"]["hd95_max_mm"]
    row = next(csv.DictReader((out / "per_volume.csv").read_text().splitlines()))
    assert {"hd95_mm_lv", "hd95_max_mm_lv", "hd95_vox_mean", "hd95_max_vox_mean"} <= set(row)
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    meta = json.loads((tmp_path / "export" / "1" / "assets.extra" / "plc_metadata.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["num_classes"] == 4 and meta["n4"] is False
    assert meta["precision"] == "mixed_bfloat16"  # float32 signature, bf16 inside


def test_evaluate_script_errors(tmp_path):
    proc = subprocess.run([sys.executable, "evaluate.py", f"--workdir={tmp_path / 'none'}"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --workdir=")
    (tmp_path / "sm" / "1").mkdir(parents=True)  # looks like a SavedModel base folder
    (tmp_path / "sm" / "1" / "saved_model.pb").write_bytes(b"")
    proc = subprocess.run([sys.executable, "evaluate.py", f"--model={tmp_path / 'sm'}", "--dataset=synthetic",
                           f"--export_dir={tmp_path / 'exp'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2  # refused before loading anything or evaluating
    expected = f"error: --export_dir: --model={tmp_path / 'sm'} is already a SavedModel"
    assert proc.stderr.strip().splitlines()[-1] == expected


def test_an_unknown_labeled_set_is_an_error_where_it_matters_and_said_where_not(capsys):
    """Issue 20: a model outside a stage workdir and no --no_of_tr_imgs / --comb_tr_imgs no longer
    means tr1/c1 silently: where the split's volumes depend on them it is an error, else one line
    says which list is used."""
    from evaluation.evaluator import split_key

    assert split_key("acdc", "val", "tr1", "c2") == ("tr1", "c2")
    with pytest.raises(InputError, match=r"^--no_of_tr_imgs and --comb_tr_imgs: not given and not recorded .*"
                                         r"the val volumes of acdc depend on them; pass them$"):
        split_key("acdc", "val", None, None)
    with pytest.raises(InputError, match=r"^--comb_tr_imgs: .* the val volumes of acdc depend on them"):
        split_key("acdc", "val", "tr1", None)
    with pytest.raises(InputError, match=r"^--no_of_tr_imgs: .* the test volumes of acdc depend"):  # ssl4mis test set
        split_key("acdc", "test", None, "c1")
    with pytest.raises(InputError, match="no such split"):
        split_key("synthetic", "val", "tr99", None)
    capsys.readouterr()
    assert split_key("prostate_md", "test", None, None) == ("tr1", "c1")
    assert capsys.readouterr().err.splitlines() == [
        "warning: --no_of_tr_imgs and --comb_tr_imgs: not given and not recorded with the model; using the test "
        "volumes of tr1/c1 (the same for every labeled set of prostate_md)"]


def test_evaluating_a_weights_file_outside_a_workdir_says_which_split(tmp_path, data_dir, capsys):
    from evaluation.evaluator import evaluate_model

    weights = tmp_path / "lone.weights.h5"
    ed.random_unet(3).save_weights(str(weights))
    summary = evaluate_model(str(weights), data_dir=str(data_dir), dataset="synthetic", split="val",
                             out_dir=str(tmp_path / "out"), num_plot_volumes=0, write_predictions=False)
    assert summary["ids"] == list(VAL_IDS) and summary["no_of_tr_imgs"] == "tr1"
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")] == [
        "warning: --no_of_tr_imgs and --comb_tr_imgs: not given and not recorded with the model; using the val "
        "volumes of tr1/c1 (the same for every labeled set of synthetic)"]
