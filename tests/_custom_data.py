"""Tiny MSD-layout and nnU-Net-v2-layout folders for the ``--dataset custom`` tests.

Every volume is an anisotropic (x != y != z spacing), obliquely oriented (rotated, translated
affine) scan of a bright ellipse (label 1) holding a brighter core (label 2, multi-class only) on a
noisy background; every slice holds every class. Spacings differ between cases, so the derived
median resolution is not any single case's.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

# (x, y, z) spacing per case; medians: x 0.9, y 1.2.
SPACINGS = [(0.9, 1.2, 3.0), (0.8, 1.3, 3.5), (1.0, 1.1, 2.5), (0.9, 1.2, 3.0), (0.85, 1.25, 3.0),
            (0.95, 1.15, 4.0), (0.9, 1.2, 3.0), (0.9, 1.2, 3.0), (0.9, 1.2, 3.0), (0.9, 1.2, 3.0)]


def oblique_affine(spacing, k: int) -> np.ndarray:
    """Rotation about z by 20 + 7k degrees, a tilt about x, the voxel spacing, an offset."""
    a, t = math.radians(20 + 7 * k), math.radians(10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(spacing)
    aff[:3, 3] = (-40.0 + k, 25.0 - 2 * k, 100.0 + 3 * k)
    return aff


def phantom(shape, k: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, D) float32 and label (H, W, D) uint8 of case k."""
    rng = np.random.default_rng(seed + k)
    h, w, d = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    label = np.zeros(shape, np.uint8)
    image = rng.normal(0.0, 0.15, shape).astype(np.float32)
    for z in range(d):
        cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
        ry, rx = h * 0.3 + z, w * 0.3
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        label[..., z][r < 1.0] = 1
        if num_classes > 2:
            label[..., z][r < 0.3] = 2
    image += label.astype(np.float32) + 0.3 * k
    return image, label


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = nib.Nifti1Header()
    hdr.set_xyzt_units("mm")
    nib.save(nib.Nifti1Image(data, affine, hdr), str(path))


def write_msd(root: Path, num_labeled: int = 6, num_unlabeled: int = 2, num_classes: int = 3,
              shape=(40, 26, 3), seed: int = 0) -> Path:
    """MSD Task folder: 4-D two-channel images (channel 0 = the phantom, 1 = its negative),
    ``dataset.json`` with ``modality``, ``labels`` {"0": "background", ...} and a ``training`` list;
    unlabeled images in ``imagesTr`` without a label; one ``imagesTs`` image."""
    names = ["background", "whole organ", "core"][:num_classes]
    training = []
    cases = [f"organ_{i:03d}" for i in range(num_labeled + num_unlabeled + 1)]
    for k, case in enumerate(cases):
        image, label = phantom(shape, k, num_classes, seed)
        aff = oblique_affine(SPACINGS[k % len(SPACINGS)], k)
        four_d = np.stack([image, -image], axis=-1)  # (H, W, D, 2)
        if k < num_labeled + num_unlabeled:
            _save(four_d, aff, root / "imagesTr" / f"{case}.nii.gz")
        else:
            _save(four_d, aff, root / "imagesTs" / f"{case}.nii.gz")
        if k < num_labeled:
            _save(label, aff, root / "labelsTr" / f"{case}.nii.gz")
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    info = {"name": "Organ", "modality": {"0": "T2", "1": "NEG"},
            "labels": {str(i): n for i, n in enumerate(names)}, "numTraining": num_labeled,
            "training": training, "test": [f"./imagesTs/{cases[-1]}.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    return root


def write_nnunet(root: Path, num_labeled: int = 6, num_unlabeled: int = 2, num_classes: int = 2,
                 shape=(40, 26, 3), seed: int = 1) -> Path:
    """nnU-Net v2 folder: ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``,
    ``imagesUnlabeled/<case>_0000.nii.gz``, ``imagesTs/<case>_0000.nii.gz`` and a v2
    ``dataset.json`` (``channel_names``, ``labels`` {"background": 0, ...}, ``file_ending``)."""
    names = ["background", "lesion", "core"][:num_classes]
    cases = [f"case_{i:03d}" for i in range(num_labeled + num_unlabeled + 1)]
    for k, case in enumerate(cases):
        image, label = phantom(shape, k, num_classes, seed)
        aff = oblique_affine(SPACINGS[k % len(SPACINGS)], k)
        folder = "imagesTr" if k < num_labeled else "imagesUnlabeled" if k < num_labeled + num_unlabeled else "imagesTs"
        _save(image, aff, root / folder / f"{case}_0000.nii.gz")
        if k < num_labeled:
            _save(label, aff, root / "labelsTr" / f"{case}.nii.gz")
    info = {"channel_names": {"0": "CT"}, "labels": {n: i for i, n in enumerate(names)},
            "numTraining": num_labeled, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    return root
