"""In-plane geometry of preprocessing and its inverse (ORIGINAL_SPEC §5.2, §6.1).

Forward (per volume, slice axis 2 untouched): rescale by ``spacing / target_resolution`` with
scikit-image, then centre crop (``start = (x - nx) // 2``) or centre zero-pad
(``offset = (nx - x) // 2``) to the network size, independently per axis.

Inverse (for predictions): paste the network output into a zero array of the rescaled size
(undo the crop) or cut its centre (undo the pad), resize the class probabilities to the native
in-plane size with linear interpolation (no anti-aliasing), and take the argmax. Pixels outside a
crop get all-zero probabilities, i.e. background after the argmax, as in the originals. The
resize uses ``mode='constant'`` (as the originals), so native pixels beyond the outermost
rescaled pixel centre are blended with 0 for every class alike; the argmax is unaffected.

The ``meta`` dict written by ``data.preprocess`` (``meta.json``) carries ``native_shape``
``[H0, W0, D]``, ``rescaled_shape`` ``[x, y]`` and ``image_size`` ``[nx, ny]``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import skimage.transform

from common.errors import InputError


def scale_factors(spacing: Sequence[float], target_resolution: Sequence[float]) -> tuple[float, float]:
    """In-plane scale factors ``(px / tx, py / ty)`` of the resampling."""
    return (float(spacing[0]) / float(target_resolution[0]), float(spacing[1]) / float(target_resolution[1]))


def rescale_inplane(volume: np.ndarray, scale: Sequence[float], order: int) -> np.ndarray:
    """Rescale every slice of ``volume`` (H0, W0, D) in-plane by ``scale`` -> (x, y, D) float64.

    Equivalent to ``skimage.transform.rescale`` per slice (the slice axis has scale 1, which
    scikit-image's zoom maps exactly onto itself). Anti-aliasing is off (ORIGINAL_SPEC §9.4).
    """
    return skimage.transform.rescale(
        volume.astype(np.float64, copy=False),
        scale=(float(scale[0]), float(scale[1]), 1.0),
        order=order,
        mode="constant",
        cval=0.0,
        clip=True,
        preserve_range=True,
        anti_aliasing=False,
        channel_axis=None,
    )


def _axis_slices(size: int, target: int) -> tuple[slice, slice]:
    """(slice into the rescaled axis, slice into the cropped/padded axis) of the shared region."""
    if size >= target:  # crop (or equal)
        start = (size - target) // 2
        return slice(start, start + target), slice(0, target)
    offset = (target - size) // 2  # pad
    return slice(0, size), slice(offset, offset + size)


def crop_pad_offsets(rescaled_hw: Sequence[int], image_size: Sequence[int]) -> list[dict]:
    """Per-axis description of the crop/pad, e.g. ``{"mode": "crop", "start": 3}`` (for meta.json)."""
    out = []
    for size, target in zip(rescaled_hw, image_size):
        if size > target:
            out.append({"mode": "crop", "start": (size - target) // 2})
        elif size < target:
            out.append({"mode": "pad", "offset": (target - size) // 2})
        else:
            out.append({"mode": "none"})
    return out


def crop_or_pad(arr: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """Centre crop or zero-pad the first two axes of ``arr`` (x, y, ...) to ``image_size``."""
    sx_src, sx_dst = _axis_slices(arr.shape[0], int(image_size[0]))
    sy_src, sy_dst = _axis_slices(arr.shape[1], int(image_size[1]))
    out = np.zeros((int(image_size[0]), int(image_size[1])) + arr.shape[2:], dtype=arr.dtype)
    out[sx_dst, sy_dst] = arr[sx_src, sy_src]
    return out


def uncrop_or_unpad(arr: np.ndarray, rescaled_hw: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`crop_or_pad`: ``arr`` (nx, ny, ...) -> (x, y, ...), zeros where cropped away."""
    x, y = int(rescaled_hw[0]), int(rescaled_hw[1])
    sx_src, sx_dst = _axis_slices(x, arr.shape[0])
    sy_src, sy_dst = _axis_slices(y, arr.shape[1])
    out = np.zeros((x, y) + arr.shape[2:], dtype=arr.dtype)
    out[sx_src, sy_src] = arr[sx_dst, sy_dst]
    return out


def _meta_shapes(meta: Mapping) -> tuple[tuple[int, int, int], tuple[int, int], tuple[int, int]]:
    try:
        native = tuple(int(v) for v in meta["native_shape"])
        rescaled = tuple(int(v) for v in meta["rescaled_shape"])
        size = tuple(int(v) for v in meta["image_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"meta.json: missing or invalid geometry field ({exc})") from None
    if len(native) != 3 or len(rescaled) != 2 or len(size) != 2:
        raise InputError("meta.json: native_shape needs 3 values, rescaled_shape and image_size 2")
    return native, rescaled, size  # type: ignore[return-value]


def probabilities_to_native(probs: np.ndarray, meta: Mapping) -> np.ndarray:
    """Map network class probabilities back to the native grid of the volume.

    Args:
        probs: (D, H, W, C) softmax probabilities on the preprocessed grid.
        meta: the volume's ``meta.json`` dict.

    Returns:
        (H0, W0, D, C) float32 probabilities on the native grid (zero outside a crop).
    """
    (h0, w0, depth), rescaled, size = _meta_shapes(meta)
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] != depth or tuple(probs.shape[1:3]) != size:
        raise InputError(f"probabilities shape {probs.shape} does not match meta (D={depth}, size={size})")
    out = np.empty((h0, w0, depth, probs.shape[3]), np.float32)  # (H0, W0, D, C)
    for d in range(depth):
        full = uncrop_or_unpad(probs[d].astype(np.float64), rescaled)  # (x, y, C)
        out[:, :, d, :] = skimage.transform.resize(
            full, (h0, w0, probs.shape[3]), order=1, mode="constant", cval=0.0, clip=True,
            preserve_range=True, anti_aliasing=False)
    return out


def labels_to_native(probs: np.ndarray, meta: Mapping) -> np.ndarray:
    """Argmax of :func:`probabilities_to_native`: (D, H, W, C) -> (H0, W0, D) int16 labels."""
    return np.argmax(probabilities_to_native(probs, meta), axis=-1).astype(np.int16)
