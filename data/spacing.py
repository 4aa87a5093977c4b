"""Voxel spacing that may be unknown, and the ``--pixel_spacing`` flag that states it.

Some layouts do not record a usable voxel size: the SSL4MIS h5 files store none, and copies of the
originals' cropped files may carry the NIfTI default slice spacing of 1.0. Such axes are ``None``
here and in ``meta.json`` (``"spacing": [x, y, null]``); evaluation then reports HD95 / ASSD in
pixels only instead of pretending the voxels are 1 mm (see ``evaluation.inference.surface_spacing``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from common.errors import InputError

Spacing = tuple[Optional[float], Optional[float], Optional[float]]


def parse_pixel_spacing(text: str | None) -> Spacing | None:
    """Parse ``--pixel_spacing``: ``MM`` (in-plane only, slice spacing unknown) or ``X,Y,Z`` (mm).

    Returns:
        ``None`` when the flag is empty, else ``(x, y, z)`` with ``z = None`` for a single value.

    Raises:
        InputError: not numbers, not 1 or 3 values, or a value that is not a positive finite number.
    """
    if text is None or not str(text).strip():
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--pixel_spacing={text}: expected MM or X,Y,Z in mm (numbers)") from None
    if len(values) not in (1, 3):
        raise InputError(f"--pixel_spacing={text}: expected 1 value (in-plane mm) or 3 values X,Y,Z, "
                         f"got {len(values)}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"--pixel_spacing={text}: spacings must be positive finite numbers")
    return (values[0], values[0], None) if len(values) == 1 else (values[0], values[1], values[2])


def is_complete(spacing: Sequence[Optional[float]] | None) -> bool:
    """True when all three axes have a known positive spacing (mm surface distances are possible)."""
    return spacing is not None and len(spacing) == 3 and all(
        s is not None and math.isfinite(float(s)) and float(s) > 0 for s in spacing)


def describe(spacing: Sequence[Optional[float]] | None) -> str:
    """Human-readable spacing, e.g. ``1.36719 x 1.36719 x ? mm``."""
    if spacing is None:
        return "unknown"
    return " x ".join("?" if s is None else f"{float(s):g}" for s in spacing) + " mm"


def affine_with_spacing(affine: np.ndarray, spacing: Sequence[Optional[float]]) -> np.ndarray:
    """``affine`` with the length of each of its first three columns set to the known spacings.

    Directions and origin are kept; an axis whose spacing is ``None`` keeps its column.
    """
    out = np.array(affine, dtype=np.float64)
    for axis, s in enumerate(spacing[:3]):
        if s is None:
            continue
        norm = float(np.linalg.norm(out[:3, axis]))
        out[:3, axis] = out[:3, axis] * (float(s) / norm) if norm > 0 else np.eye(3)[axis] * float(s)
    return out
