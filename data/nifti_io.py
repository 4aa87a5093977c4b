"""Checked NIfTI loading: every problem becomes a one-line ``InputError`` naming the file."""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from common.errors import InputError


@dataclass
class NiftiVolume:
    """Array and geometry of one NIfTI file.

    Attributes:
        path: the file.
        data: voxel array as stored (scaled by slope/intercept), any dtype, shape as on disk.
        affine: (4, 4) voxel-to-world matrix.
        header: the NIfTI header (a copy).
        spacing: voxel sizes of the first three axes in mm (``pixdim[1:4]``).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing: tuple[float, float, float]


def load_nifti(path: str | os.PathLike, ndims: Sequence[int] = (3,), what: str = "image") -> NiftiVolume:
    """Load a NIfTI file fully and validate it.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        ndims: accepted numbers of array dimensions.
        what: word used in error messages (``image``, ``label``).

    Returns:
        The loaded :class:`NiftiVolume`.

    Raises:
        InputError: missing, unreadable or truncated file, wrong number of dimensions,
            non-finite voxel values, or non-positive voxel spacing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = msg.replace(f'"{path}"', "it").replace(str(path), "it")
        raise InputError(f"{path}: cannot read {what} as NIfTI (truncated or corrupt?): {msg}") from None
    if data.ndim not in tuple(ndims):
        allowed = " or ".join(str(n) for n in ndims)
        raise InputError(f"{path}: {what} has {data.ndim} dimensions {tuple(data.shape)}, expected {allowed}")
    if min(data.shape) < 1:
        raise InputError(f"{path}: {what} is empty, shape {tuple(data.shape)}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path}: {what} contains {n_bad} NaN/Inf voxels")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InputError(f"{path}: invalid voxel spacing {zooms} in the header")
    return NiftiVolume(path=path, data=data, affine=np.asarray(img.affine, dtype=np.float64),
                       header=img.header.copy(), spacing=zooms)


def to_label_array(vol: NiftiVolume, num_classes: int, what: str = "label") -> np.ndarray:
    """Convert a label volume to int16 and check its values lie in ``0..num_classes-1``.

    Raises:
        InputError: non-integer values or values outside the class range.
    """
    data = vol.data
    if np.issubdtype(data.dtype, np.floating):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(f"{vol.path}: {what} has non-integer values")
        data = rounded
    values = np.unique(data)
    bad = values[(values < 0) | (values > num_classes - 1)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        raise InputError(f"{vol.path}: {what} values {shown} outside 0..{num_classes - 1}")
    return data.astype(np.int16)


def check_same_grid(image: NiftiVolume, label: NiftiVolume, image_shape: tuple[int, ...]) -> None:
    """Raise ``InputError`` unless the label has the (spatial) shape of the image."""
    if tuple(label.data.shape) != tuple(image_shape):
        raise InputError(
            f"{label.path}: label shape {tuple(label.data.shape)} differs from image shape "
            f"{tuple(image_shape)} of {image.path}"
        )


def check_same_affine(image: NiftiVolume, label: NiftiVolume, atol: float = 1e-3) -> None:
    """Raise ``InputError`` unless the label's affine equals the image's (``atol`` in mm).

    A label written on another grid (other origin, spacing or orientation) would be compared
    voxel by voxel with the wrong anatomy.
    """
    diff = float(np.max(np.abs(np.asarray(label.affine) - np.asarray(image.affine))))
    if not diff <= atol:
        raise InputError(f"{label.path}: label affine differs from the affine of {image.path} "
                         f"(largest difference {diff:.4g}); image and label must share one grid")


def select_channel(data: np.ndarray, channel: int | None, path: str | os.PathLike) -> np.ndarray:
    """The 3-D volume of channel ``channel`` of a 3-D or 4-D array ``(H, W, D[, K])``.

    A 4-D array with one channel needs no ``channel``; with several it does.

    Raises:
        InputError: several channels and no ``channel``, a channel out of range, or a channel
            asked of a 3-D image; naming ``path``.
    """
    if data.ndim == 4:
        if channel is None:
            if data.shape[3] != 1:
                raise InputError(f"{path}: 4-D image with {data.shape[3]} channels {tuple(data.shape)}; "
                                 f"choose one with --channel")
            channel = 0
        if not 0 <= channel < data.shape[3]:
            raise InputError(f"--channel={channel}: {path} has {data.shape[3]} channels")
        return data[..., channel]
    if channel not in (None, 0):
        raise InputError(f"--channel={channel}: {path} is a 3-D image")
    return data
