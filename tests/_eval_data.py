"""Tiny raw volumes and preprocessed data directories for the evaluation / predict / export tests.

Volumes are synthetic "hearts" (nested ellipses, labels 0..3) whose image intensity is label / 3,
so an oracle predictor that rounds ``3 * x`` recovers the preprocessed label; the native-grid
pipeline must then reproduce the native ground truth closely.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

NUM_CLASSES = 4


def raw_volume(seed: int, shape=(50, 56, 3), spacing=(3.0, 2.8, 8.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (H0, W0, D) float32, label (H0, W0, D) int16, affine)`` with anisotropic spacing."""
    rng = np.random.default_rng(seed)
    h0, w0, d = shape
    xx, yy = np.meshgrid(np.arange(h0) * spacing[0], np.arange(w0) * spacing[1], indexing="ij")
    cx, cy = h0 * spacing[0] / 2 + rng.uniform(-8, 8), w0 * spacing[1] / 2 + rng.uniform(-8, 8)
    label = np.zeros(shape, np.int16)
    for z in range(d):
        r = 30.0 + 4 * z + rng.uniform(-3, 3)
        dist = np.sqrt(((xx - cx) / 1.2) ** 2 + (yy - cy) ** 2)
        label[..., z][dist < r] = 1
        label[..., z][dist < 0.75 * r] = 2
        label[..., z][dist < 0.5 * r] = 3
    image = (label / 3.0).astype(np.float32)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [12.5, -30.0, 7.0]
    return image, label, affine


def nifti(data: np.ndarray, affine: np.ndarray, dtype=None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data if dtype is None else data.astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def write_raw(path: Path, seed: int = 0, shape=(45, 52, 3)) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A raw NIfTI scan (scanner-like intensities) of :func:`raw_volume`; returns (label, loaded image)."""
    image, label, affine = raw_volume(seed, shape=shape)
    img = nifti(image * 800.0 + 50.0, affine, np.float32)  # arbitrary scanner intensities
    img.header["descrip"] = b"test volume"
    nib.save(img, str(path))
    return label, nib.load(str(path))


def write_preprocessed(root: Path, ids=("027", "028", "029"), dataset: str = "synthetic") -> Path:
    """A preprocessed data directory in the documented layout (docs/INTERFACES.md)."""
    import configs
    from data.volume_prep import preprocess_volume

    cfg = configs.get_config(dataset)
    root.mkdir(parents=True, exist_ok=True)
    for k, vid in enumerate(ids):
        image, label, affine = raw_volume(k, shape=(50 + 4 * k, 56 - 3 * k, 2 + k % 3))
        spacing = tuple(float(abs(affine[i, i])) for i in range(3))
        pre_img, pre_lab, meta = preprocess_volume(image, spacing, cfg, label=label)
        vdir = root / vid
        vdir.mkdir()
        eye = np.eye(4)
        nib.save(nifti(np.transpose(pre_img, (1, 2, 0)), eye, np.float32), str(vdir / "image.nii.gz"))
        nib.save(nifti(np.transpose(pre_lab, (1, 2, 0)), eye, np.int16), str(vdir / "label.nii.gz"))
        nib.save(nifti(label, affine, np.int16), str(vdir / "native_label.nii.gz"))
        (vdir / "meta.json").write_text(json.dumps(meta))
    (root / "dataset.json").write_text(json.dumps({"dataset": dataset, "ids": list(ids), "n4": False,
                                                   "image_size": list(cfg.image_size)}))
    return root


def oracle_predictor(x: np.ndarray) -> np.ndarray:
    """Probabilities that are the one-hot of ``round(3 x)``: ``(N, H, W, 1) -> (N, H, W, 4)``."""
    lab = np.clip(np.rint(3.0 * x[..., 0]), 0, NUM_CLASSES - 1).astype(np.int64)
    return np.eye(NUM_CLASSES, dtype=np.float32)[lab]


def random_unet(seed: int = 0, num_classes: int = NUM_CLASSES, size: int = 32):
    """A UNet whose BN moving statistics were updated by a training-mode call."""
    import keras

    from models.unet import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(num_classes)
    rng = np.random.default_rng(seed)
    model(rng.normal(0.5, 0.3, (2, size, size, 1)).astype(np.float32), training=True)  # updates BN stats
    return model


def write_workdir(root: Path, model, data_dir: Path, dataset: str = "synthetic") -> Path:
    """A stage workdir with config.json, best/model.weights.h5 and metrics.json."""
    (root / "best").mkdir(parents=True)
    model.save_weights(str(root / "best" / "model.weights.h5"))
    (root / "best" / "best.json").write_text(json.dumps({"step": 2, "val_dice": 0.1}))
    (root / "config.json").write_text(json.dumps({
        "stage": "baseline", "dataset": dataset, "data_dir": str(data_dir), "no_of_tr_imgs": "tr1",
        "comb_tr_imgs": "c1", "seed": 0}))
    (root / "metrics.json").write_text(json.dumps({
        "train": [{"step": 1, "seg_loss": 0.9}, {"step": 2, "seg_loss": 0.8}],
        "val": [{"step": 2, "val_dice": 0.1}]}))
    return root
