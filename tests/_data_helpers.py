"""Helpers for the data tests: tiny raw datasets in each owner's exact on-disk layout.

Every volume gets a non-identity (oblique) affine and anisotropic voxels.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SPACING = (1.5, 1.25, 8.0)


def oblique_affine(spacing=SPACING, angle: float = 0.3, origin=(-40.0, 25.0, 10.0)) -> np.ndarray:
    """Rotation about z by ``angle`` times voxel sizes, with an origin; column norms = spacing."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def save(arr: np.ndarray, path: Path, affine: np.ndarray | None = None, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = nib.Nifti1Header()
    if dtype is not None:
        hdr.set_data_dtype(dtype)
    nib.save(nib.Nifti1Image(arr if dtype is None else arr.astype(dtype), oblique_affine() if affine is None else affine,
                             hdr), str(path))
    return path


def blob_volume(shape=(24, 20, 3), num_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32) and label (int16) with concentric blobs of classes 1..C-1."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2 + 0.3, np.arange(shape[1]) - shape[1] / 2, indexing="ij")
    r = np.hypot(x, y)
    lab2 = np.zeros(shape[:2], np.int16)
    radii = np.linspace(min(shape[:2]) * 0.42, min(shape[:2]) * 0.15, num_classes - 1)
    for c, rad in enumerate(radii, start=1):
        lab2[r < rad] = c
    label = np.repeat(lab2[:, :, None], shape[2], axis=2)
    image = (100.0 + 50.0 * label + rng.normal(0, 5, shape)).astype(np.float32)
    return image, label


def write_acdc(root: Path, patients=(1, 2), frames=None, shape=(24, 20, 3)) -> Path:
    """ACDC layout: root/training/patientXXX/{Info.cfg, patientXXX_frameYY[_gt].nii.gz}."""
    frames = frames or {1: (1, 3), 2: (4, 9)}
    for i, p in enumerate(patients):
        ed, es = frames.get(p, (1, 3))
        pdir = root / "training" / f"patient{p:03d}"
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 20\nWeight: 80.0\n")
        for k, frame in enumerate((ed, es)):
            img, lab = blob_volume(shape, 4, seed=10 * i + k)
            if k == 1:
                lab = np.where(lab == 3, 2, lab).astype(np.int16)  # ES differs from ED
            save(img.astype(np.int16), pdir / f"patient{p:03d}_frame{frame:02d}.nii.gz")
            save(lab, pdir / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", dtype=np.uint8)
    return root


def write_prostate_msd(root: Path, cases=(0, 1), shape=(24, 20, 3)) -> Path:
    """MSD Task05 layout: imagesTr/prostate_NN.nii.gz (4-D, T2 + ADC), labelsTr/prostate_NN.nii.gz."""
    for case in cases:
        img, lab = blob_volume(shape, 3, seed=case)
        four = np.stack([img, img * 0.5 + 7.0], axis=-1)  # (H, W, D, 2): T2, ADC
        save(four, root / "imagesTr" / f"prostate_{case:02d}.nii.gz")
        save(lab, root / "labelsTr" / f"prostate_{case:02d}.nii.gz", dtype=np.uint8)
    (root / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"macOS resource fork")
    return root


def write_prostate_orig(root: Path, ids=("000", "002"), shape=(24, 20, 3)) -> Path:
    """The originals' layout: <id>/img.nii.gz (4-D) + <id>/mask.nii.gz."""
    for n, vid in enumerate(ids):
        img, lab = blob_volume(shape, 3, seed=n)
        save(np.stack([img, img], axis=-1), root / vid / "img.nii.gz")
        save(lab, root / vid / "mask.nii.gz", dtype=np.int16)
    return root


MMWHS_VALUES = (0, 205, 420, 500, 550, 600, 820, 850)


def mmwhs_label(shape=(24, 20, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Raw MM-WHS label with all 8 values, and the expected 0..7 class map."""
    idx = (np.arange(np.prod(shape)).reshape(shape) // 7) % 8
    raw = np.asarray(MMWHS_VALUES, np.int16)[idx]
    return raw, idx.astype(np.int16)


def write_mmwhs_raw(root: Path, ids=(1001, 1002), shape=(24, 20, 3)) -> Path:
    """MM-WHS layout: mr_train/mr_train_10NN_image.nii.gz + _label.nii.gz (values 205..850)."""
    for n, vid in enumerate(ids):
        img, _ = blob_volume(shape, 4, seed=n)
        raw, _ = mmwhs_label(shape)
        save(img, root / "mr_train" / f"mr_train_{vid}_image.nii.gz")
        save(raw, root / "mr_train" / f"mr_train_{vid}_label.nii.gz", dtype=np.int16)
    return root


def write_mmwhs_orig(root: Path, ids=("1003",), shape=(24, 20, 3)) -> Path:
    """The originals' layout: <id>/img.nii.gz + <id>/seg.nii.gz (labels already 0..7)."""
    for n, vid in enumerate(ids):
        img, _ = blob_volume(shape, 4, seed=n)
        _, idx = mmwhs_label(shape)
        save(img, root / vid / "img.nii.gz")
        save(idx, root / vid / "seg.nii.gz", dtype=np.uint8)
    return root
