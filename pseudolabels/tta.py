"""Test-time-augmentation agreement filter for pseudo-labels (ORIGINAL_SPEC §4.3, §5.5.4).

For an unlabeled volume two random whole-volume augmentations are drawn (each one of: rotation
by U(-30, 30) degrees, isotropic scaling by U(0.9, 1.1) rounded to 0.01, left-right flip; the
second is redrawn while both are flips). The network predicts each augmented volume, the
softmax maps are mapped back with the *exact* inverse transform (rotation by the negated angle,
scaling by 1/s about the same centre, flip re-applied; the originals used ``2 - s`` and a
``rescale`` that also resampled the class axis, ORIGINAL_SPEC 9.3.10), and the two argmax label
maps are compared by the volume-wise F1 (Dice) score of each foreground class:

    F1_c = 2 |A_c ∩ B_c| / (|A_c| + |B_c|),   agreement = mean_{c=1..C-1} F1_c,

where a class absent from both maps is excluded from the mean (an undefined score, not 0 or 1).
The volume is kept as a pseudo-label when ``agreement > threshold`` (0.9); an agreement that is
undefined for every class (both predictions pure background) rejects the volume, as in the
originals (mean of an empty list).

Transforms act on the in-plane axes only, slice by slice, with ``scipy.ndimage.affine_transform``
(linear interpolation, constant 0 outside the field of view) about the slice centre
((H-1)/2, (W-1)/2); probability maps are transformed channel by channel.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from scipy import ndimage

ROTATE, SCALE, FLIP = "rotate", "scale", "flip"
KINDS = (ROTATE, SCALE, FLIP)

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One whole-volume in-plane augmentation.

    Attributes:
        kind: ``"rotate"`` (value = angle in degrees, counter-clockwise in the displayed image),
            ``"scale"`` (value = zoom factor s about the centre, s > 1 enlarges) or ``"flip"``
            (left-right, value unused).
        value: the angle or the scale factor.
    """

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Augmentation.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == SCALE and not self.value > 0:
            raise ValueError(f"scale factor must be > 0, got {self.value}")

    def inverse(self) -> "Augmentation":
        """The exact inverse transform (negated angle, reciprocal scale, flip)."""
        if self.kind == ROTATE:
            return Augmentation(ROTATE, -self.value)
        if self.kind == SCALE:
            return Augmentation(SCALE, 1.0 / self.value)
        return self

    def as_dict(self) -> dict:
        """JSON-friendly description for the manifest."""
        return {"kind": self.kind, "value": float(self.value)}

    def _output_to_input(self) -> np.ndarray:
        """2x2 matrix M with input = M (output - centre) + centre, in (row, col) coordinates."""
        if self.kind == ROTATE:
            t = math.radians(self.value)
            # Same direction as scipy.ndimage.rotate(angle, axes=(1, 0)) used by the originals.
            return np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        if self.kind == SCALE:
            return np.eye(2) / self.value
        return np.array([[1.0, 0.0], [0.0, -1.0]])

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """Transforms a volume in-plane.

        Args:
            volume: (D, H, W) image or (D, H, W, C) probability map.

        Returns:
            float32 array of the same shape (linear interpolation, 0 outside the field of view;
            the flip is exact).
        """
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim not in (3, 4):
            raise ValueError(f"Augmentation.apply expects (D, H, W) or (D, H, W, C), got {volume.shape}")
        if self.kind == FLIP:
            return np.ascontiguousarray(volume[:, :, ::-1])  # (D, H, W[, C])
        height, width = volume.shape[1:3]
        centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
        matrix = self._output_to_input()
        offset = centre - matrix @ centre
        out = np.empty_like(volume)
        channels = [None] if volume.ndim == 3 else range(volume.shape[3])
        for d in range(volume.shape[0]):
            for c in channels:
                index = (d,) if c is None else (d, Ellipsis, c)
                out[index] = ndimage.affine_transform(
                    volume[index], matrix, offset=offset, order=1, mode="constant", cval=0.0
                )  # (H, W)
        return out


def sample_augmentation(rng: np.random.Generator) -> Augmentation:
    """Draws one of rotation U(-30, 30) deg, scale round(U(0.9, 1.1), 2) or flip (1/3 each)."""
    kind = KINDS[int(rng.integers(3))]
    if kind == ROTATE:
        return Augmentation(ROTATE, float(rng.uniform(-30.0, 30.0)))
    if kind == SCALE:
        return Augmentation(SCALE, round(float(rng.uniform(0.9, 1.1)), 2))
    return Augmentation(FLIP)


def sample_augmentation_pair(rng: np.random.Generator) -> tuple[Augmentation, Augmentation]:
    """Draws two augmentations, redrawing the second while both are flips."""
    first = sample_augmentation(rng)
    second = sample_augmentation(rng)
    while first.kind == FLIP and second.kind == FLIP:
        second = sample_augmentation(rng)
    return first, second


def per_class_f1(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """Volume-wise F1 (Dice) of each foreground class between two label maps.

    Args:
        a: integer label map (any shape).
        b: integer label map of the same shape.
        num_classes: C, including background.

    Returns:
        (C-1,) float64 array, entry c-1 = 2|a=c ∧ b=c| / (|a=c| + |b=c|), NaN where class c is
        absent from both maps.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"per_class_f1: shapes differ {a.shape} vs {b.shape}")
    classes = np.arange(1, num_classes)
    count_a = np.bincount(a, minlength=num_classes)[1:num_classes].astype(np.float64)
    count_b = np.bincount(b, minlength=num_classes)[1:num_classes].astype(np.float64)
    both = np.bincount(a[a == b], minlength=num_classes)[1:num_classes].astype(np.float64)
    denom = count_a + count_b
    f1 = np.full(classes.shape, np.nan)
    present = denom > 0
    f1[present] = 2.0 * both[present] / denom[present]
    return f1


def mean_agreement(f1: np.ndarray) -> float:
    """Mean of the defined per-class scores; NaN when no class is defined."""
    f1 = np.asarray(f1, dtype=np.float64)
    defined = f1[~np.isnan(f1)]
    return float(defined.mean()) if defined.size else float("nan")


@dataclasses.dataclass(frozen=True)
class AgreementResult:
    """Outcome of :func:`tta_agreement`."""

    agreement: float  # mean foreground F1, NaN if undefined
    per_class: tuple[float, ...]  # (C-1,) with NaN for classes absent from both
    augmentations: tuple[Augmentation, Augmentation]

    def keep(self, threshold: float) -> bool:
        """Whether the volume passes the filter (``agreement > threshold``; NaN fails)."""
        return bool(self.agreement > threshold)


def tta_agreement(
    predict_fn: PredictFn,
    image: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
) -> AgreementResult:
    """Agreement between predictions of two random augmentations of one volume.

    Args:
        predict_fn: maps (N, H, W, 1) float32 images to (N, H, W, C) softmax probabilities.
        image: (D, H, W) preprocessed volume.
        num_classes: C.
        rng: source of the two augmentations.

    Returns:
        :class:`AgreementResult` with the mean foreground F1 between the two inverse-mapped
        argmax label maps.
    """
    image = np.asarray(image, dtype=np.float32)  # (D, H, W)
    augmentations = sample_augmentation_pair(rng)
    labels = []
    for aug in augmentations:
        probs = np.asarray(predict_fn(aug.apply(image)[..., None]), dtype=np.float32)  # (D, H, W, C)
        if probs.shape != image.shape + (num_classes,):
            raise ValueError(f"predict_fn returned {probs.shape}, expected {image.shape + (num_classes,)}")
        back = aug.inverse().apply(probs)  # (D, H, W, C)
        labels.append(np.argmax(back, axis=-1))  # (D, H, W)
    f1 = per_class_f1(labels[0], labels[1], num_classes)
    return AgreementResult(mean_agreement(f1), tuple(float(v) for v in f1), augmentations)
