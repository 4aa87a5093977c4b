"""Tiny datasets in the originals' cropped NIfTI layout and in the SSL4MIS h5 layout.

Conventions copied from the public files (checked on the real ACDC copies):
* cropped: ``patientXXX/img_cropped.nii.gz`` float32 (H, W, D) and ``mask_cropped.nii.gz`` int16,
  affine ``diag(-res, -res, 1)`` with sform code 2, qform code 0, no units; slice spacing 1.0;
* SSL4MIS: ``data/patientXXX_frameYY.h5`` with ``image`` (Z, H, W) float32 in [0, 1] and ``label``
  (Z, H, W) uint8, gzip-compressed and chunked; 2-D ``..._slice_N.h5`` files (N from 1);
  ``train.list`` / ``val.list`` / ``test.list`` of ``patientXXX_frameYY`` lines and
  ``train_slices.list`` of ``patientXXX_frameYY_slice_N`` lines.
Images are ``label / 3`` so the oracle predictor of ``_eval_data`` recovers the labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np


def heart(shape=(40, 36, 3), seed: int = 0, shrink: float = 1.0) -> np.ndarray:
    """(H, W, D) int16 labels: nested ellipses RV/Myo/LV, one size per slice, ``shrink`` < 1 for ES."""
    rng = np.random.default_rng(seed)
    h, w, d = shape
    xx, yy = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    lab = np.zeros(shape, np.int16)
    for z in range(d):
        r = shrink * min(h, w) * (0.38 - 0.04 * z) + rng.uniform(-1, 1)
        cx, cy = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
        dist = np.hypot((xx - cx) / 1.15, yy - cy)
        lab[..., z][dist < r] = 1
        lab[..., z][dist < 0.7 * r] = 2
        lab[..., z][dist < 0.45 * r] = 3
    return lab


def cropped_affine(res: float, slice_spacing: float = 1.0) -> np.ndarray:
    return np.diag([-res, -res, slice_spacing, 1.0])


def save_cropped(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    """Save like the public copies: sform code 2, qform code 0, units unknown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.set_sform(affine, code=2)
    img.set_qform(None, code=0)
    nib.save(img, str(path))
    return path


def write_cropped(root: Path, folders: Sequence[str] = ("patient001", "patient002"), size=(64, 64), depth: int = 3,
                  res: float = 2.5, slice_spacing: float = 1.0) -> Path:
    """The originals' cropped layout: ``root/<folder>/{img_cropped,mask_cropped}.nii.gz``."""
    for k, folder in enumerate(folders):
        lab = heart(size + (depth,), seed=k)
        image = (lab / 3.0 + 0.01 * k).astype(np.float32)
        save_cropped(root / folder / "img_cropped.nii.gz", image, cropped_affine(res, slice_spacing))
        save_cropped(root / folder / "mask_cropped.nii.gz", lab.astype(np.int16), cropped_affine(res, slice_spacing))
    return root


def save_h5(path: Path, image: np.ndarray, label: np.ndarray, keys=("image", "label")) -> Path:
    """One SSL4MIS h5 file (``image`` float32, ``label`` uint8, gzip + chunks as the public files)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if "image" in keys:
            f.create_dataset("image", data=np.asarray(image, np.float32), compression="gzip")
        if "label" in keys:
            f.create_dataset("label", data=np.asarray(label).astype(np.uint8), compression="gzip")
    return path


def h5_volume(shape_zhw=(3, 40, 36), seed: int = 0, es: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(image (Z, H, W) float32 = label / 3, label (Z, H, W) uint8)``."""
    z, h, w = shape_zhw
    lab = np.transpose(heart((w, h, z), seed=seed, shrink=0.8 if es else 1.0), (2, 1, 0))  # (Z, H, W)
    return (lab / 3.0).astype(np.float32), lab.astype(np.uint8)


def write_ssl4mis(root: Path, patients: dict[int, tuple[int, int]] | None = None, as_slices: Sequence[int] = (),
                  shapes: dict[int, tuple[int, int, int]] | None = None, lists: dict[str, Sequence[int]] | None = None,
                  slices_dir: str = "", first_slice: int = 1) -> Path:
    """An SSL4MIS ACDC folder.

    Args:
        root: the ``data/ACDC`` folder to write.
        patients: ``{patient: (ED frame, ES frame)}``; default 1: (1, 12), 2: (4, 11) (ES frame listed second).
        as_slices: patients written as 2-D slice files only (the others as volume files).
        shapes: ``{patient: (Z, H, W)}``; default (3, 40, 36).
        lists: ``{"train"|"val"|"test": [patients]}`` written as list files (both frames each); None: no lists.
        slices_dir: ``""`` (slices next to the volumes) or ``"slices"``.
        first_slice: number of the first slice file (1 as the public copy, 0 as SSL4MIS's script).
    """
    patients = patients or {1: (1, 12), 2: (4, 11)}
    shapes = shapes or {}
    data = root / "data"
    for p, (ed, es) in patients.items():
        for k, frame in enumerate((ed, es)):
            name = f"patient{p:03d}_frame{frame:02d}"
            image, label = h5_volume(shapes.get(p, (3, 40, 36)), seed=10 * p, es=k == 1)
            if p in as_slices:
                for z in range(image.shape[0]):
                    save_h5(data / slices_dir / f"{name}_slice_{z + first_slice}.h5", image[z], label[z])
            else:
                save_h5(data / f"{name}.h5", image, label)
    if lists is not None:
        for key, members in lists.items():
            names = [f"patient{p:03d}_frame{f:02d}" for p in members for f in patients[p]]
            (root / f"{key}.list").write_text("\n".join(names) + "\n")
    return root


def expect_layout_error(raw: Path, layout: str, match: str, dataset: str = "synthetic", **kw) -> str:
    """``preprocess_dataset(layout=...)`` must raise a one-line InputError matching ``match`` and write nothing."""
    import pytest

    from data import preprocess
    from common.errors import InputError

    out = raw.parent / "pp"
    with pytest.raises(InputError, match=match) as exc:
        preprocess.preprocess_dataset(dataset, raw, out, layout=layout, **kw)
    assert "\n" not in str(exc.value) and not out.exists()
    return str(exc.value)
