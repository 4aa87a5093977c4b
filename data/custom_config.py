"""Derive a custom dataset's config and splits from its data (``--dataset custom``).

What the built-in configs hard-code, derived here (README "Your own data"):

- classes and structure names: from ``labels`` of the folder's ``dataset.json``;
- target resolution: per in-plane axis, the median spacing over all volumes (``--target_resolution``);
- image size: per axis, the largest in-plane extent after resampling, rounded up to a multiple of
  32 and capped at :data:`MAX_IMAGE_SIZE` (``--image_size``);
- class weights (``--dsc_loss 0`` only): 0.1 for background, 0.9 shared by the structures, the
  rule behind the built-in weights;
- ``min_seg_classes`` (segmentation slices of the joint PLC batch): 2 for C <= 3, 3 for more
  classes (the built-in values), lowered while fewer than :data:`SEG_FRACTION` of the labeled
  training slices qualify (``--min_seg_classes``);
- ``min_contrastive_classes`` (contrastive slices of the joint batch): all C classes (the
  originals' rule), lowered, not below 2, while fewer than :data:`CONTRASTIVE_FRACTION` of the
  labeled training slices hold that many labels (``--min_contrastive_classes``);
- ``contrastive_background``: on for binary tasks (C = 2), where the originals' loss without a
  background prototype is degenerate, off otherwise (``--contrastive_background``);
- dense-CRF parameters: the originals' ACDC values :data:`DEFAULT_CRF`, whose spatial stds are pixels of
  ACDC's 1.36719 mm grid (``crf_pixel_mm``; converted to this dataset's grid when pseudo-labels are made),
  or ``--crf_params`` in pixels of this dataset's own grid;
- splits: ``--split_file`` or :func:`default_split` from ``--seed``.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from configs import custom
from configs.base import DatasetConfig
from common.errors import InputError
from common.jsonfile import read_json

MAX_IMAGE_SIZE = 256
MULTIPLE = 32  # the UNet downsamples 5 times
DEFAULT_CRF = (0.01, 0.5, 10.0, 10.0, 30.0, 30)  # ORIGINAL_SPEC §4.3, ACDC / MMWHS values
ACDC_CRF_PIXEL_MM = (1.36719, 1.36719)  # the grid DEFAULT_CRF's spatial stds are pixels of (ACDC's target resolution)
SEG_FRACTION = 0.10  # the joint step needs 20 of 300 candidate slices
CONTRASTIVE_FRACTION = 0.05  # ... and 5 of 300
TEST_FRACTION = 0.2
NUM_VAL = 2
LABELED_SETS = (1, 2, 8)
NUM_COMBS = 3


def struct_name(name: str, value: int) -> str:
    """A structure name usable in file, CSV and TensorBoard names (other characters -> ``_``)."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name).strip()).strip("_")
    return clean or f"class{value}"


def median_resolution(spacings: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Per-axis median of in-plane spacings ``[(x, y), ...]`` (mm), rounded to 1e-5 mm."""
    arr = np.asarray(spacings, dtype=np.float64)[:, :2]  # (V, 2)
    return tuple(round(float(v), 5) for v in np.median(arr, axis=0))  # type: ignore[return-value]


def derive_image_size(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]],
                      target: Sequence[float], cap: int = MAX_IMAGE_SIZE) -> tuple[int, int]:
    """Largest resampled in-plane extent per axis, rounded up to a multiple of 32, capped at ``cap``.

    The resampled extent of a volume is ``round(n * spacing / target)`` (what the rescale gives).
    """
    sh = np.asarray(shapes, dtype=np.float64)[:, :2]  # (V, 2)
    sp = np.asarray(spacings, dtype=np.float64)[:, :2]  # (V, 2)
    extent = np.round(sh * sp / np.asarray(target, dtype=np.float64)).max(axis=0)  # (2,)
    return tuple(int(min(cap, max(MULTIPLE, math.ceil(e / MULTIPLE) * MULTIPLE))) for e in extent)  # type: ignore


def class_weights(num_classes: int) -> tuple[float, ...]:
    """0.1 for background and 0.9 shared equally by the C-1 structures (``--dsc_loss 0``)."""
    return (0.1,) + (round(0.9 / (num_classes - 1), 6),) * (num_classes - 1)


def labels_per_slice(label: np.ndarray) -> np.ndarray:
    """Number of distinct label values of each slice of a ``(D, H, W)`` label volume -> ``(D,)``."""
    return np.asarray([np.unique(s).size for s in label], dtype=np.int64)


def fraction_at_least(counts: np.ndarray, k: int) -> float:
    """Fraction of slices whose number of distinct labels is >= k (0 for no slices)."""
    return float(np.mean(counts >= k)) if counts.size else 0.0


def choose_min_classes(counts: np.ndarray, start: int, floor: int, fraction: float) -> int:
    """Largest k in ``floor..start`` with at least ``fraction`` of the slices holding >= k labels,
    else ``floor``."""
    k = start
    while k > floor and fraction_at_least(counts, k) < fraction:
        k -= 1
    return k


def parse_pair(text: str | None, flag: str, kind: type) -> tuple[Any, Any] | None:
    """``"X,Y"`` (or ``"X"`` for both axes) -> ``(X, Y)`` of positive numbers; None for no value."""
    if text is None or str(text).strip() == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise InputError(f"--{flag}={text}: expected one or two comma-separated numbers") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(v > 0 for v in values):
        raise InputError(f"--{flag}={text}: expected one or two positive numbers (X,Y)")
    return values[0], values[1]


def parse_crf_params(text: str | None) -> tuple[float, float, float, float, float, int]:
    """``--crf_params a_sxy,a_srgb,a_w1,g_sxy,g_w2,n_iter`` (default :data:`DEFAULT_CRF`)."""
    if text is None or str(text).strip() == "":
        return DEFAULT_CRF
    try:
        values = [float(p) for p in str(text).split(",")]
    except ValueError:
        raise InputError(f"--crf_params={text}: expected 6 comma-separated numbers") from None
    if len(values) != 6 or min(values[0], values[1], values[3]) <= 0 or min(values[2], values[4]) < 0 \
            or values[5] < 1 or values[5] != int(values[5]):
        raise InputError(f"--crf_params={text}: expected a_sxy,a_srgb,a_w1,g_sxy,g_w2,n_iter with positive "
                         "standard deviations, non-negative weights and a positive integer n_iter")
    return values[0], values[1], values[2], values[3], values[4], int(values[5])


def _combinations(rest: list[str], k: int, rng: np.random.Generator) -> list[list[str]]:
    """Up to :data:`NUM_COMBS` distinct k-subsets of ``rest`` (all of them when there are fewer)."""
    if math.comb(len(rest), k) <= NUM_COMBS:
        return [list(c) for c in itertools.combinations(sorted(rest), k)]
    out: list[list[str]] = []
    while len(out) < NUM_COMBS:
        pick = sorted(str(v) for v in rng.choice(rest, size=k, replace=False))
        if pick not in out:
            out.append(pick)
    return out


def default_split(labeled: Sequence[str], all_ids: Sequence[str], seed: int, source: str) -> dict[str, Any]:
    """Deterministic split of a dataset from ``seed``.

    Test: 20 % of the labeled cases (at least 1); validation: 2 labeled cases; labeled sets ``tr1``,
    ``tr2``, ``tr8`` with combinations ``c1..c3`` drawn from the remaining labeled cases (fewer
    combinations when fewer exist, a set is left out when it needs more cases than remain) and
    ``trall`` (all of them); unlabeled pool: every volume except the validation and test ones
    (labeled training volumes included, as in the originals' pools).

    Raises:
        InputError: fewer than 4 labeled cases (naming ``source``).
    """
    lab = sorted(labeled)
    n_test = max(1, int(math.floor(TEST_FRACTION * len(lab) + 0.5)))
    if len(lab) < n_test + NUM_VAL + 1:
        raise InputError(f"{source}: {len(lab)} labeled case(s); the default split needs at least "
                         f"{n_test + NUM_VAL + 1} ({n_test} test, {NUM_VAL} validation, 1 training); "
                         "add labeled cases or give --split_file")
    rng = np.random.default_rng(int(seed))
    perm = [lab[i] for i in rng.permutation(len(lab))]
    test, val, rest = sorted(perm[:n_test]), sorted(perm[n_test:n_test + NUM_VAL]), perm[n_test + NUM_VAL:]
    splits: dict[str, Any] = {}
    for k in LABELED_SETS:
        if k <= len(rest):
            splits[f"tr{k}"] = {f"c{i + 1}": c for i, c in enumerate(_combinations(rest, k, rng))}
    splits["trall"] = {"c1": sorted(rest)}
    held = set(test) | set(val)
    splits.update(unlabeled=[i for i in sorted(all_ids) if i not in held], val=val, test=test)
    return splits


def load_split_file(path: str | os.PathLike, all_ids: Sequence[str], labeled: Sequence[str]) -> dict[str, Any]:
    """Read and check a ``--split_file`` (format: :func:`configs.custom.normalize_splits`).

    Without ``unlabeled`` the pool is every volume that is not in ``val`` or ``test``.

    Raises:
        InputError: missing or malformed file, unknown ids, unlabeled volumes in a labeled list,
            overlapping labeled / validation / test lists (naming the file).
    """
    p = Path(path)
    raw = read_json(p, "--split_file not found", want_object=False)
    if isinstance(raw, dict) and "unlabeled" not in raw:
        held = set(raw.get("val") or []) | set(raw.get("test") or [])
        raw = {**raw, "unlabeled": [i for i in sorted(all_ids) if i not in held]}
    splits = custom.normalize_splits(raw, str(p))
    custom.check_split_ids(splits, all_ids, labeled, str(p))
    return splits


def training_ids(splits: Mapping[str, Any]) -> list[str]:
    """Labeled training volumes: every id of the labeled sets (no val / test)."""
    ids = {v for n, combs in splits.items() if n not in custom.RESERVED for c in combs.values() for v in c}
    return sorted(ids)


def build_config(label_names: Sequence[str], target_resolution: Sequence[float], image_size: Sequence[int],
                 min_seg_classes: int, min_contrastive_classes: int,
                 crf_params: Sequence[float], channel: int | None, source: str = "dataset.json",
                 contrastive_background: bool | None = None) -> DatasetConfig:
    """The :class:`DatasetConfig` of a custom dataset (checks the class-count ranges).

    ``contrastive_background`` None means the rule: on for C = 2 only.

    Raises:
        InputError: ``min_*_classes`` out of range for the class count.
    """
    c = len(label_names)
    if not 1 <= min_seg_classes <= c:
        raise InputError(f"--min_seg_classes={min_seg_classes}: must lie in 1..{c} ({c} classes)")
    if not 2 <= min_contrastive_classes <= c:
        raise InputError(f"--min_contrastive_classes={min_contrastive_classes}: must lie in 2..{c} ({c} classes)")
    names = [struct_name(n, v) for v, n in enumerate(label_names)][1:]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{source}: structure name(s) {', '.join(dup)} given to several labels")
    return DatasetConfig(
        name=custom.NAME, image_size=(int(image_size[0]), int(image_size[1])),
        target_resolution=(float(target_resolution[0]), float(target_resolution[1])), num_classes=c,
        struct_names=tuple(names), class_weights=class_weights(c), min_seg_classes=int(min_seg_classes),
        crf_params=tuple(crf_params),  # type: ignore[arg-type]
        # The default parameters are the originals' ACDC ones, in pixels of ACDC's grid; given ones are
        # taken as pixels of this dataset's own grid.
        crf_pixel_mm=ACDC_CRF_PIXEL_MM if tuple(crf_params) == DEFAULT_CRF else None,
        unlabeled_pool=custom.POOL_KEY, raw_layout=custom.NAME,
        min_contrastive_classes=int(min_contrastive_classes), input_channel=channel,
        contrastive_background=(c == 2) if contrastive_background is None else bool(contrastive_background))


def default_min_seg_classes(num_classes: int) -> int:
    """The built-in rule: 2 labels for C <= 3 (prostate), 3 for more (ACDC, MM-WHS)."""
    return 2 if num_classes <= 3 else 3
