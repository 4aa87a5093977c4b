"""Segment arbitrary NIfTI volumes with a trained model (library part of ``predict.py``).

Each volume goes through the dataset's training preprocessing (``data.preprocess.preprocess_volume``:
optional N4, percentile min-max normalization, in-plane resampling to the training resolution,
centre crop/pad), the network (chunks of 20 slices), and the inverse mapping to the input grid
(``data.geometry.labels_to_native``). The output is an int16 label volume with the input's affine
and header.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from data.atomic import atomic_save_nifti
from data.errors import InputError
from data.nifti_io import load_nifti
from evaluation.inference import CHUNK, Predictor, label_image_like, predict_native

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti_name(name: str) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` file names."""
    return name.endswith(NIFTI_SUFFIXES)


def _check_raw_spacing(path: str | os.PathLike) -> None:
    """Refuse a header whose in-plane/slice spacing is zero or not finite.

    nibabel silently replaces zero ``pixdim`` entries by 1 when it loads a file, which would
    resample the volume as if it had 1 mm voxels; the raw header is read unchecked to catch that.
    """
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            header = nib.Nifti1Header.from_fileobj(f, check=False)
    except Exception:  # unreadable files are reported by load_nifti with the full reason
        return
    ndim = int(header["dim"][0])
    pixdim = [float(v) for v in header["pixdim"][1:1 + min(max(ndim, 1), 3)]]
    if not all(np.isfinite(v) and v != 0 for v in pixdim):
        raise InputError(f"{path}: voxel spacing missing or invalid in the header (pixdim {pixdim})")


def read_input_volume(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, Any]:
    """Load a 3-D NIfTI image (or one channel of a 4-D one) with checks.

    Args:
        path: the file.
        channel: index along the 4th axis for 4-D inputs (e.g. 0 = T2 of MSD prostate); a 4-D file with
            a single channel needs none.

    Returns:
        ``(image (H0, W0, D) float32, nibabel image)``.

    Raises:
        InputError: unreadable file, wrong dimensionality, non-finite voxels, missing/zero spacing.
    """
    _check_raw_spacing(path)
    vol = load_nifti(path, ndims=(3, 4), what="image")
    data = np.asarray(vol.data)
    if data.ndim == 4:
        if channel is None:
            if data.shape[3] != 1:
                raise InputError(f"{path}: 4-D image with {data.shape[3]} channels {data.shape}; "
                                 f"choose one with --channel")
            channel = 0
        if not 0 <= channel < data.shape[3]:
            raise InputError(f"--channel={channel}: {path} has {data.shape[3]} channels")
        data = data[..., channel]
    elif channel not in (None, 0):
        raise InputError(f"--channel={channel}: {path} is a 3-D image")
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path}: image voxel type {data.dtype} is not numeric")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: image contains NaN/Inf voxels")
    return data.astype(np.float32), nib.load(str(path))


def segment_volume(predictor: Predictor, cfg: Any, image: np.ndarray, spacing: tuple[float, ...],
                   n4: bool = False, chunk: int = CHUNK, n4_shrink: int = 1) -> np.ndarray:
    """Labels ``(H0, W0, D)`` int16 of a raw image ``(H0, W0, D)`` with voxel size ``spacing`` (mm).

    ``n4`` / ``n4_shrink``: N4 correction as the training data's preprocessing did it (its
    ``dataset.json``); another shrink factor gives another bias field, so other network inputs.
    """
    from data.preprocess import preprocess_volume

    pre, _, meta = preprocess_volume(image, spacing, cfg, n4=n4, n4_shrink=n4_shrink)  # (D, H, W)
    labels, _ = predict_native(predictor, pre, meta, chunk)  # (H0, W0, D)
    return labels


def segment_file(predictor: Predictor, cfg: Any, in_path: str | os.PathLike, out_path: str | os.PathLike,
                 n4: bool = False, channel: int | None = None, chunk: int = CHUNK, n4_shrink: int = 1) -> np.ndarray:
    """Segment one NIfTI file and write the labels with the input's affine and header
    (``n4`` / ``n4_shrink`` as :func:`segment_volume`).

    Returns:
        The label volume ``(H0, W0, D)`` int16.
    """
    image, img = read_input_volume(in_path, channel)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InputError(f"{in_path}: voxel spacing missing or invalid in the header {zooms}")
    try:
        labels = segment_volume(predictor, cfg, image, zooms, n4=n4, chunk=chunk, n4_shrink=n4_shrink)
    except InputError as exc:  # e.g. a constant image: name the file (a folder may hold many)
        raise InputError(str(exc) if str(in_path) in str(exc) else f"{in_path}: {exc}") from None
    atomic_save_nifti(label_image_like(labels, img), out_path)
    return labels


def plan_outputs(input_path: str | os.PathLike, output_path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pairs ``(input file, output file)``: a file -> a file, or a folder -> a folder (same names).

    Raises:
        InputError: missing input, folder without NIfTI files, a file output for a folder input, an
            output that would overwrite an input.
    """
    src, dst = Path(input_path), Path(output_path)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and is_nifti_name(p.name))
        if not files:
            raise InputError(f"--input={src}: folder contains no .nii/.nii.gz files")
        if dst.exists() and not dst.is_dir():
            raise InputError(f"--output={dst}: must be a folder when --input is a folder")
        if dst.resolve() == src.resolve():
            raise InputError(f"--output={dst}: same folder as --input; inputs are never overwritten")
        return [(f, dst / f.name) for f in files]
    if not src.exists():
        raise InputError(f"--input={src}: no such file or folder")
    if not is_nifti_name(src.name):
        raise InputError(f"--input={src}: expected a .nii or .nii.gz file")
    if dst.is_dir():
        dst = dst / src.name
    if not is_nifti_name(dst.name):
        raise InputError(f"--output={dst}: expected a .nii or .nii.gz file name")
    if dst.resolve() == src.resolve():
        raise InputError(f"--output={dst}: same file as --input; inputs are never overwritten")
    return [(src, dst)]
