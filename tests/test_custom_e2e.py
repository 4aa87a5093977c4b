"""--dataset custom end to end, on folders written by the tests (tests/_custom_data.py).

* nnU-Net v2 layout, binary: preprocess -> baseline (2 steps) -> pseudolabel -> joint (2 steps,
  background as a contrastive class) -> evaluate -> predict on the imagesTs file, after the data
  directory is gone (the config recorded by training is used): the README's command chain.
* MSD layout, 3 classes, 4-D two-channel images: preprocess with --channel -> evaluate and predict
  (4-D imagesTs file, the training channel by default) with a workdir of an untrained UNet that
  records no dataset config (read from the data dir), and the SavedModel-metadata path.

The stage, evaluation and prediction functions are what the scripts call (train_selftrain.py,
evaluate.py, predict.py), run in-process to keep the test fast; the preprocessing CLI is run in
tests/test_custom_dataset.py.
"""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import configs
from data import store
from common.errors import InputError
from data.preprocess_custom import preprocess_custom
from tests import _eval_data as ed
from tests._custom_data import write_msd, write_nnunet
from tests._training_data import stage_conf


def test_nnunet_binary_end_to_end(tmp_path):
    import keras

    from evaluation.evaluator import evaluate_model
    from evaluation.segment import predict_paths
    from training.stages.joint import run_joint
    from training.stages.pseudolabel import run_pseudolabel
    from training.stages.supervised import run_supervised

    keras.utils.set_random_seed(0)
    raw = write_nnunet(tmp_path / "Dataset002_Lesion")
    data = tmp_path / "P"
    info = preprocess_custom(raw, data)
    cfg = configs.get_config("custom", data)
    assert cfg.num_classes == 2 and cfg.contrastive_background and cfg.image_size == (64, 32)
    w = tmp_path / "runs"
    kw = dict(dataset="custom", no_of_tr_imgs="tr2", comb_tr_imgs="c1", val_every=100, ckpt_every=100, batch_size=8)
    base = run_supervised(stage_conf("baseline", data, w / "baseline", n_iter=2, **kw))
    assert base["step"] == 2
    recorded = json.loads((w / "baseline" / "config.json").read_text())
    assert recorded["dataset"] == "custom" and recorded["num_classes"] == 2 and recorded["image_size"] == [64, 32]
    assert recorded["dataset_config"] == info["config"]
    # No CRF: on the noise of a 2-step baseline the originals' CRF leaves no structure, and every
    # joint iteration would be skipped (the CRF at C = 2 is tested in tests/test_crf.py).
    pl = run_pseudolabel(stage_conf("pseudolabel", data, w / "pseudolabel", init_from=str(w / "baseline"),
                                    crf=False, **kw))
    unlabeled = info["splits"]["unlabeled"]
    assert pl["kept"] == len(unlabeled) == 5 and "case_007" in unlabeled  # imagesUnlabeled/ volumes included
    round0 = w / "pseudolabel" / "pseudo_labels" / "round_0"
    pl_img = nib.load(str(round0 / "case_007.nii.gz"))
    np.testing.assert_allclose(pl_img.affine, nib.load(str(data / "case_007" / "image.nii.gz")).affine, atol=1e-5)
    joint = run_joint(stage_conf("joint", data, w / "plc", init_from=str(w / "baseline"), rounds=1,
                                 n_iter_per_round=2, pseudo_label_dir=str(round0), **kw))
    assert joint["step"] == 2 and joint["skipped"] < 2, joint  # at least one real joint step at C = 2
    metrics = json.loads((w / "plc" / "metrics.json").read_text())
    assert {"seg_loss", "local_loss", "net_loss"} <= set(metrics["train"][-1])
    assert np.isfinite(metrics["train"][-1]["local_loss"]) and metrics["train"][-1]["local_loss"] > 0

    summary = evaluate_model(str(w / "plc"))  # = python evaluate.py --workdir runs/plc
    assert summary["ids"] == info["splits"]["test"] and summary["dataset"] == "custom"
    assert set(summary["structures"]) == {"lesion"}
    test_id = info["splits"]["test"][0]
    pred = nib.load(str(w / "plc" / "eval_test" / "predictions" / f"{test_id}.nii.gz"))
    native = nib.load(str(raw / "labelsTr" / f"{test_id}.nii.gz"))
    assert pred.shape == native.shape
    np.testing.assert_allclose(pred.affine, native.affine, atol=1e-6)

    shutil.move(str(data), str(tmp_path / "moved"))  # predict needs only what training recorded
    jobs = predict_paths(w / "plc", raw / "imagesTs", tmp_path / "segs")  # = python predict.py
    assert [(j.src.name, j.dst.name) for j in jobs] == [("case_008_0000.nii.gz", "case_008.nii.gz")]
    src, out = nib.load(str(jobs[0].src)), nib.load(str(jobs[0].dst))
    assert out.shape == src.shape and out.get_data_dtype() == np.int16
    np.testing.assert_array_equal(out.affine, src.affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}


def test_msd_multiclass_evaluate_and_predict(tmp_path):
    from evaluation.evaluator import evaluate_model
    from evaluation.export import METADATA_PATH, metadata_for
    from workdir import model_dataset_config
    from evaluation.segment import predict_paths

    raw = write_msd(tmp_path / "Task01_Organ", num_labeled=4, num_unlabeled=1)
    data = tmp_path / "P"
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"tr1": {"c1": ["organ_000"], "c2": ["organ_001"]}, "val": ["organ_002"],
                                 "test": ["organ_003"]}))
    info = preprocess_custom(raw, data, channel=0, split_file=split)
    cfg = configs.get_config("custom", data)
    assert cfg.num_classes == 3 and cfg.input_channel == 0 and not cfg.contrastive_background
    assert info["splits"]["unlabeled"] == ["organ_000", "organ_001", "organ_004"]
    wd = ed.write_workdir(tmp_path / "wd", ed.random_unet(0, num_classes=3), data, dataset="custom")
    summary = evaluate_model(str(wd), split="val")  # no num_classes / dataset_config in this config.json
    assert summary["ids"] == ["organ_002"] and set(summary["structures"]) == {"whole_organ", "core"}
    assert (wd / "eval_val" / "predictions" / "organ_002.nii.gz").is_file()

    jobs = predict_paths(wd, raw / "imagesTs" / "organ_005.nii.gz", tmp_path / "seg.nii.gz")
    assert jobs[0].channel == 0  # the 4-D file is read at the training channel
    src, out = nib.load(str(raw / "imagesTs" / "organ_005.nii.gz")), nib.load(str(tmp_path / "seg.nii.gz"))
    assert src.shape == (40, 26, 3, 2) and out.shape == (40, 26, 3)
    np.testing.assert_array_equal(out.affine, src.affine)
    with pytest.raises(InputError, match="--channel=2: .*organ_005.nii.gz has 2 channels"):
        predict_paths(wd, raw / "imagesTs" / "organ_005.nii.gz", tmp_path / "seg2.nii.gz", channel=2)

    # A SavedModel records the whole config in its metadata (what predict.py reads).
    sm = tmp_path / "export" / "1"
    (sm / "assets.extra").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"")
    (sm / METADATA_PATH).write_text(json.dumps(metadata_for(cfg)))
    assert model_dataset_config("custom", tmp_path / "export") == cfg
    assert model_dataset_config("custom", tmp_path / "export", data) == cfg
    other = tmp_path / "P64"
    preprocess_custom(raw, other, channel=0, split_file=split, image_size=(64, 64))
    with pytest.raises(InputError, match=r"P64: preprocessed differently .*image_size \(64, 32\) vs \(64, 64\)"):
        model_dataset_config("custom", tmp_path / "export", other)
    assert store.list_ids(data) == info["ids"]
