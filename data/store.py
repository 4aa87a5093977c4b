"""Read access to a preprocessed data directory written by ``python -m data.preprocess``.

Layout (docs/INTERFACES.md): ``P/dataset.json`` and, per volume, ``P/<id>/image.nii.gz``
(float32, (H, W, D)), ``label.nii.gz`` (int16, optional), ``native_label.nii.gz`` and
``meta.json``. In memory, volumes are ``(D, H, W)``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from common.errors import InputError
from common.jsonfile import data_root as _root, read_dataset_json
from data.nifti_io import load_nifti


@dataclass
class Volume:
    """A preprocessed volume.

    Attributes:
        id: volume id.
        image: (D, H, W) float32.
        label: (D, H, W) int16, or ``None`` for an unlabeled volume.
        meta: the ``meta.json`` dict (geometry for ``data.geometry``).
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    meta: dict


def list_ids(data_dir: str | os.PathLike) -> list[str]:
    """Volume ids of a data dir, in the order of ``dataset.json``."""
    info = read_dataset_json(data_dir)
    ids = info.get("ids")
    if not isinstance(ids, list):
        raise InputError(f"{Path(data_dir) / 'dataset.json'}: no 'ids' list; is --data_dir a directory written "
                         "by data.preprocess?")
    return [str(i) for i in ids]


def _volume_dir(data_dir: str | os.PathLike, vid: str) -> Path:
    vdir = _root(data_dir) / str(vid)
    if not vdir.is_dir():
        known = list_ids(data_dir) if (Path(data_dir) / "dataset.json").is_file() else []
        hint = f" (available: {', '.join(known[:8])}{'...' if len(known) > 8 else ''})" if known else ""
        raise InputError(f"--data_dir={data_dir}: unknown volume id {vid!r}{hint}")
    return vdir


def load_meta(data_dir: str | os.PathLike, vid: str) -> dict:
    """The ``meta.json`` of one volume."""
    path = _volume_dir(data_dir, vid) / "meta.json"
    if not path.is_file():
        raise InputError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from None


def load_volume(data_dir: str | os.PathLike, vid: str) -> Volume:
    """Load one preprocessed volume as (D, H, W) arrays."""
    vdir = _volume_dir(data_dir, vid)
    img = load_nifti(vdir / "image.nii.gz", ndims=(3,), what="image")
    image = np.transpose(np.asarray(img.data, dtype=np.float32), (2, 0, 1))  # (D, H, W)
    label = None
    if (vdir / "label.nii.gz").exists():
        lab = load_nifti(vdir / "label.nii.gz", ndims=(3,), what="label")
        if lab.data.shape != img.data.shape:
            raise InputError(f"{lab.path}: label shape {lab.data.shape} differs from image {img.data.shape}")
        label = np.transpose(np.asarray(lab.data).astype(np.int16), (2, 0, 1))  # (D, H, W)
    return Volume(id=str(vid), image=image, label=label, meta=load_meta(data_dir, vid))


def load_volumes(data_dir: str | os.PathLike, ids: Sequence[str]) -> list[Volume]:
    """Load several volumes; an id not in the data dir raises ``InputError`` naming it."""
    known = set(list_ids(data_dir))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(f"--data_dir={data_dir}: unknown volume id(s) {', '.join(unknown)} "
                         f"(the data dir has {len(known)} volumes; preprocess with --phases ED,ES for *_ES ids)")
    return [load_volume(data_dir, i) for i in ids]


def load_native_label(data_dir: str | os.PathLike, vid: str) -> nib.Nifti1Image:
    """The original label at native resolution, with its original affine and header."""
    path = _volume_dir(data_dir, vid) / "native_label.nii.gz"
    if not path.is_file():
        raise InputError(f"{path}: not found (volume {vid!r} has no label)")
    return nib.load(str(path))
