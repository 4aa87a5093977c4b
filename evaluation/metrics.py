"""Segmentation metrics on 3-D label volumes: per-class Dice, HD95 and ASSD (mm and voxels).

Definitions (A = ground-truth voxels of a class, B = predicted voxels of that class):

* Dice = 2 |A ∩ B| / (|A| + |B|), computed explicitly for every class 0..C-1 over the whole volume
  (the originals' ``sklearn.f1_score`` mis-indexed absent classes, ORIGINAL_SPEC §9.1.7).
  A class absent from both A and B gives NaN (nothing to score; excluded from means by ``nanmean``);
  a class absent from the ground truth but predicted gives 0, and so does a missed class.
* Surfaces: ``S(X) = X xor erode(X)`` with the face-connected structuring element
  (``scipy.ndimage.generate_binary_structure(3, 1)``) and zero outside the volume, the default of
  ``medpy.metric.binary``. Directed distances ``d(S(A) -> S(B))`` are the Euclidean distances (in mm
  with ``spacing``) from each voxel of S(A) to the nearest voxel of S(B), by
  ``scipy.ndimage.distance_transform_edt(~S(B), sampling=spacing)``.
* HD95 (default ``method="pooled"``) = 95th percentile (linear interpolation, ``numpy.percentile``)
  of the two directed sets pooled into one (concatenated, duplicates kept),
  ``P95(d(S(A)->S(B)) ⊎ d(S(B)->S(A)))``, as ``medpy.metric.binary.hd95`` (what SSL4MIS-style
  papers report). This is NOT MONAI's definition: MONAI's ``HausdorffDistanceMetric(percentile=95)``
  (what MONAI- and many nnU-Net-based papers report) takes the larger of the two directed 95th
  percentiles, ``max(P95(d(S(A)->S(B))), P95(d(S(B)->S(A))))``; that reduction of the same
  directed sets is offered as ``method="max_directed"``.
  The two agree when both directed sets have the same distribution (e.g. parallel planes) and
  differ otherwise, e.g. for a small structure against a large one, where the pooled set is
  dominated by the larger surface; max-of-directed is then the larger one (usually, not always:
  with interpolated percentiles of small sets the pooled value can exceed it, e.g. d(A->B) =
  [2, 2, 2, 4], d(B->A) = [0, 4] gives pooled 4.0, max-of-directed 3.8). :func:`volume_metrics`
  reports both (``hd95_*`` pooled, ``hd95_max_*`` max-of-directed), reduced from the same two
  directed distance arrays (one pair of distance transforms per structure and unit).
* ASSD = mean of both directed sets concatenated, as ``medpy.metric.binary.assd``.
* Empty masks (every surface metric, both HD95 definitions alike): both empty -> NaN (no surface to
  compare; excluded from means); exactly one empty -> ``inf`` (the distance to an empty set is
  unbounded).
  Reports average the finite values only and give their count, so missed structures stay visible
  (their Dice is 0).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from common.errors import InputError


def dice_per_class(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Hard Dice of every class ``0..num_classes-1`` over the whole volume, on label maps.

    The soft training Dice on logits is :func:`losses.segmentation.soft_dice_per_class`.

    Args:
        gt: integer ground-truth labels, any shape.
        pred: integer predicted labels, same shape as ``gt``.
        num_classes: number of classes C (background included).

    Returns:
        float64 array ``(C,)``; NaN where the class is absent from both ``gt`` and ``pred``.

    Raises:
        InputError: shapes differ, or a label lies outside ``0..num_classes-1`` (it would otherwise
            be dropped silently, e.g. raw MM-WHS values 205..850).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise InputError(f"ground truth shape {gt.shape} differs from prediction shape {pred.shape}")
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    for name, arr in (("ground truth", g), ("prediction", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise InputError(f"{name} labels span {arr.min()}..{arr.max()}, outside 0..{num_classes - 1}")
    n_gt = np.bincount(g, minlength=num_classes)[:num_classes].astype(np.float64)  # (C,)
    n_pred = np.bincount(p, minlength=num_classes)[:num_classes].astype(np.float64)  # (C,)
    n_both = np.bincount(g[g == p], minlength=num_classes)[:num_classes].astype(np.float64)  # (C,)
    denom = n_gt + n_pred
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * n_both / denom, np.nan)
    return dice


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of their union plus a one-voxel margin.

    Erosion with zero border and the exact Euclidean distance transform give the same surface
    distances on the crop as on the full volume (all surface voxels lie inside the crop and the
    margin keeps erosion at the crop edge identical), which makes large native volumes cheap.
    """
    union = a | b
    idx = np.nonzero(union)
    sl = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    return a[sl], b[sl]


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    footprint = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None,
                      connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances between two non-empty binary masks.

    Args:
        a: boolean mask, any dimensionality.
        b: boolean mask, same shape.
        spacing: voxel size per axis (mm); ``None`` means 1 per axis (voxel units).
        connectivity: structuring-element connectivity for the surface erosion (1 = faces).

    Returns:
        ``(d_ab, d_ba)``: distances from each surface voxel of ``a`` to the surface of ``b`` and
        vice versa (float64 1-D arrays).

    Raises:
        ValueError: if either mask is empty (callers apply the empty-mask rules first).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise InputError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        raise ValueError("surface_distances needs two non-empty masks")
    spacing = np.ones(a.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (a.ndim,):
        raise InputError(f"spacing {tuple(spacing)} does not match a {a.ndim}-D volume")
    a, b = _crop_to_union(a, b)
    sa = _surface(a, connectivity)
    sb = _surface(b, connectivity)
    dt_b = ndimage.distance_transform_edt(~sb, sampling=spacing)  # distance to S(b)
    dt_a = ndimage.distance_transform_edt(~sa, sampling=spacing)  # distance to S(a)
    return dt_b[sa].astype(np.float64), dt_a[sb].astype(np.float64)


def _empty_rule(a: np.ndarray, b: np.ndarray) -> float | None:
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return float("nan")
    if has_a != has_b:
        return float("inf")
    return None


def _symmetric_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None,
                         connectivity: int) -> np.ndarray | float:
    """Both directed surface-distance sets concatenated, or the empty-mask value (NaN / inf)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    rule = _empty_rule(a, b)
    if rule is not None:
        return float(rule)
    d_ab, d_ba = surface_distances(a, b, spacing, connectivity)
    return np.concatenate([d_ab, d_ba])


HD95_METHODS = ("pooled", "max_directed")
HD95_COLUMNS = {"pooled": "hd95", "max_directed": "hd95_max"}  # method -> metric-name stem (+ "_mm" / "_vox")


def _hd95_of(d_ab: np.ndarray, d_ba: np.ndarray, method: str) -> float:
    """HD95 of two non-empty directed distance sets by ``method`` (see the module doc).

    ``pooled``: ``P95(d_ab ⊎ d_ba)``; ``max_directed``: ``max(P95(d_ab), P95(d_ba))``; P95 is
    ``numpy.percentile(·, 95)`` with linear interpolation.

    Args:
        d_ab: ``(Na,)`` distances from the surface voxels of A to S(B).
        d_ba: ``(Nb,)`` distances from the surface voxels of B to S(A).
        method: one of ``HD95_METHODS``.
    """
    if method == "pooled":
        return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))  # max_directed


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None,
         connectivity: int = 1, method: str = "pooled") -> float:
    """95th-percentile symmetric Hausdorff distance between two binary masks.

    ``method="pooled"`` (default, as medpy): ``P95(d(S(a)->S(b)) ∪ d(S(b)->S(a)))``;
    ``method="max_directed"`` (as MONAI): ``max(P95(d(S(a)->S(b))), P95(d(S(b)->S(a))))``.
    Both empty -> NaN, one empty -> inf (either method).

    Args:
        a, b: binary masks of equal shape.
        spacing: voxel size per axis (mm); ``None`` gives voxel units.
        connectivity: surface connectivity (1 = faces, as medpy's default).
        method: ``"pooled"`` or ``"max_directed"``.

    Returns:
        The distance in the units of ``spacing``.

    Raises:
        InputError: unknown ``method``.
    """
    if method not in HD95_METHODS:
        raise InputError(f"HD95 method must be one of {', '.join(HD95_METHODS)}, got {method!r}")
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    rule = _empty_rule(a, b)
    if rule is not None:
        return rule
    return _hd95_of(*surface_distances(a, b, spacing, connectivity), method)


def assd(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None,
         connectivity: int = 1) -> float:
    """Average symmetric surface distance: mean of both directed distance sets concatenated.

    Both empty -> NaN, one empty -> inf.

    Args:
        a, b: binary masks of equal shape.
        spacing: voxel size per axis (mm); ``None`` gives voxel units.
        connectivity: surface connectivity (1 = faces, as medpy's default).

    Returns:
        The distance in the units of ``spacing``.
    """
    both = _symmetric_distances(a, b, spacing, connectivity)
    return both if isinstance(both, float) else float(both.mean())


METRIC_NAMES = ("dice", "hd95_mm", "hd95_max_mm", "assd_mm", "hd95_vox", "hd95_max_vox", "assd_vox")
SURFACE_MM = ("hd95_mm", "hd95_max_mm", "assd_mm")
_POOLED = ("P95 of both directed surface-distance sets pooled; medpy.metric.binary.hd95, what "
           "SSL4MIS-style papers report")
_MAX = ("max of the two directed P95; MONAI HausdorffDistanceMetric(percentile=95), what MONAI- and "
        "many nnU-Net-based papers report")
METRIC_DEFINITIONS = {
    "dice": "2|A∩B| / (|A|+|B|) per class over the 3-D volume",
    "hd95_mm": f"HD95 in mm, {_POOLED}",
    "hd95_max_mm": f"HD95 in mm, {_MAX}",
    "assd_mm": "mean of both directed surface-distance sets, mm; medpy.metric.binary.assd",
    "hd95_vox": f"HD95 in voxels, {_POOLED}",
    "hd95_max_vox": f"HD95 in voxels, {_MAX}",
    "assd_vox": "mean of both directed surface-distance sets, voxels; medpy.metric.binary.assd",
}


@dataclass(frozen=True)
class VolumeMetrics:
    """Per-class metrics of one volume; every array is ``(C,)`` with index = class (0 = background).

    ``hd95_*`` is the pooled HD95 (medpy), ``hd95_max_*`` the max-of-directed one (MONAI); see the
    module doc. Surface metrics of the background class are not computed (NaN). The ``*_mm``
    metrics are NaN for every class when the voxel spacing is unknown (never computed as if voxels
    were 1 mm). ``assd_vox``, ``hd95_max_mm`` and ``hd95_max_vox`` default to NaN for callers that
    build the record without them (fields after ``hd95_vox`` are keyword-or-trailing, so positional
    construction of the first four keeps working).
    """

    dice: np.ndarray
    hd95_mm: np.ndarray
    assd_mm: np.ndarray
    hd95_vox: np.ndarray
    assd_vox: np.ndarray | None = None
    hd95_max_mm: np.ndarray | None = None
    hd95_max_vox: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("assd_vox", "hd95_max_mm", "hd95_max_vox"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(np.shape(self.dice), np.nan))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The metrics by name (keys of ``METRIC_NAMES``)."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


def volume_metrics(gt: np.ndarray, pred: np.ndarray, num_classes: int, spacing: Sequence[float] | None,
                   surface: bool = True) -> VolumeMetrics:
    """Dice for all classes; HD95 (both definitions) / ASSD in mm and in voxels for the foreground classes.

    Per foreground class and unit, :func:`surface_distances` runs once (two distance transforms);
    ``hd95_*`` = ``P95(d_ab ⊎ d_ba)`` (pooled, medpy), ``hd95_max_*`` = ``max(P95(d_ab), P95(d_ba))``
    (MONAI) and ``assd_*`` = ``mean(d_ab ⊎ d_ba)`` are all reduced from that one pair of arrays.
    Empty-mask rules, identical for every surface metric: GT and prediction both empty -> NaN,
    exactly one empty -> inf; background -> NaN; ``*_mm`` -> NaN when ``spacing`` is None.

    Args:
        gt: integer ground truth ``(H0, W0, D)`` at native resolution.
        pred: integer prediction, same shape.
        num_classes: C.
        spacing: voxel size ``(sx, sy, sz)`` in mm, or ``None`` when it is unknown: then the mm
            metrics are NaN and only the voxel (pixel) ones are computed.
        surface: compute the surface metrics (False leaves them NaN; Dice only is fast).

    Returns:
        A :class:`VolumeMetrics`.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if spacing is not None:
        spacing = np.asarray(spacing, dtype=np.float64)
        if spacing.shape != (gt.ndim,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(f"invalid voxel spacing {tuple(spacing)} for a volume of shape {gt.shape}")
    dice = dice_per_class(gt, pred, num_classes)
    out = {name: np.full(num_classes, np.nan) for name in METRIC_NAMES[1:]}
    if surface:
        for c in range(1, num_classes):
            a = gt == c
            b = pred == c
            rule = _empty_rule(a, b)
            units = (("mm", spacing), ("vox", None)) if spacing is not None else (("vox", None),)
            for unit, sampling in units:
                if rule is not None:  # NaN / inf for HD95 (both definitions) and ASSD alike
                    for stem in (*HD95_COLUMNS.values(), "assd"):
                        out[f"{stem}_{unit}"][c] = rule
                    continue
                d_ab, d_ba = surface_distances(a, b, sampling)  # (Na,), (Nb,): the only distance pass
                for method, stem in HD95_COLUMNS.items():
                    out[f"{stem}_{unit}"][c] = _hd95_of(d_ab, d_ba, method)
                out[f"assd_{unit}"][c] = np.concatenate([d_ab, d_ba]).mean()
    return VolumeMetrics(dice=dice, **out)


def foreground_mean(values: np.ndarray, finite_only: bool = False) -> float:
    """Mean over the foreground classes 1..C-1 ignoring NaN (and inf if ``finite_only``).

    Returns NaN when no class has a value (e.g. both masks empty for every structure).
    """
    fg = np.asarray(values, dtype=np.float64)[1:]
    keep = np.isfinite(fg) if finite_only else ~np.isnan(fg)
    return float(fg[keep].mean()) if keep.any() else float("nan")
