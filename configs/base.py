"""Dataset configuration and split tables shared by every dataset module.

A dataset module defines one :class:`DatasetConfig` and a :class:`SplitTable` (plain dicts of volume
ids, no branching code). :func:`resolve_split` turns a ``(no_of_tr_imgs, comb_tr_imgs)`` pair into a
:class:`Split` and reports the valid combinations when the pair is unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from common.errors import InputError

# The labeled set every built-in split table starts with (the papers' smallest label setting). The flag
# table takes run_pipeline.py's --no_of_tr_imgs / --comb_tr_imgs defaults from it
# (training.flags.PIPELINE_DEFAULTS); the evaluator uses it to name the split when the evaluated volumes
# are the same for every labeled set (evaluation.evaluator.split_key).
REFERENCE_SPLIT_KEY = ("tr1", "c1")

COMBS = ("c1", "c2", "c3", "c4", "c5")


@dataclass(frozen=True)
class DatasetConfig:
    """Fixed properties of a dataset (ORIGINAL_SPEC §2.1, §3.1, §3.4.2, §4.3).

    Attributes:
        name: dataset key (``acdc``, ``prostate_md``, ``mmwhs``, ``synthetic``).
        image_size: network input size ``(H, W)`` after crop/pad.
        target_resolution: in-plane pixel size in mm after resampling ``(x, y)``.
        num_classes: number of classes C including background.
        struct_names: names of the C-1 foreground structures, in label order 1..C-1.
        class_weights: per-class weights of the weighted cross-entropy (``--dsc_loss 0``).
        min_seg_classes: minimum number of distinct labels a slice needs to enter the
            segmentation part of the joint PLC batch (§3.4.2 step 7).
        crf_params: dense-CRF parameters ``(a_sxy, a_srgb, a_w1, g_sxy, g_w2, n_iter)`` (§4.3); the
            spatial stds ``a_sxy``, ``g_sxy`` are pixels of a grid with pixel size ``crf_pixel_mm``.
        crf_pixel_mm: in-plane pixel size ``(x, y)`` in mm for which ``crf_params``' spatial stds
            are given (None: ``target_resolution``, the originals' own grid for their datasets).
            The pseudo-label stage converts them to the pixels of the grid in use.
        unlabeled_pool: ``(no_of_tr_imgs, comb_tr_imgs)`` whose labeled list is the unlabeled pool.
        raw_layout: name of the raw reader used by ``data.preprocess`` (``acdc``, ``prostate_md``,
            ``mmwhs``, ``custom``).
        min_contrastive_classes: minimum number of distinct labels (background counts) a slice needs
            to enter the contrastive part of the joint PLC batch (§3.4.2 steps 2-3); 0 means all
            ``num_classes`` classes, the originals' rule (every built-in dataset).
        input_channel: channel of multi-channel raw images the model was trained on (custom
            datasets preprocessed with ``--channel``); ``predict.py`` uses it by default.
        contrastive_background: the background is a class of the pseudo-label contrastive loss
            (an anchor class and a prototype). The originals exclude it, which for a binary task
            (C = 2) leaves one prototype per image: the intra-image loss is then exactly 0 and the
            inter-image loss has no negatives. Custom binary datasets set it (README "Your own data").
    """

    name: str
    image_size: tuple[int, int]
    target_resolution: tuple[float, float]
    num_classes: int
    struct_names: tuple[str, ...]
    class_weights: tuple[float, ...]
    min_seg_classes: int
    crf_params: tuple[float, float, float, float, float, int]
    unlabeled_pool: tuple[str, str]
    raw_layout: str = ""
    min_contrastive_classes: int = 0
    input_channel: int | None = None
    contrastive_background: bool = False
    crf_pixel_mm: tuple[float, float] | None = None

    @property
    def crf_reference_mm(self) -> tuple[float, float]:
        """Pixel size (mm) of the grid ``crf_params`` are defined on."""
        return tuple(self.crf_pixel_mm or self.target_resolution)  # type: ignore[return-value]

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"{self.name}: num_classes must be >= 2 (background and one structure)")
        if len(self.struct_names) != self.num_classes - 1:
            raise ValueError(f"{self.name}: struct_names must have num_classes-1 entries")
        if len(self.class_weights) != self.num_classes:
            raise ValueError(f"{self.name}: class_weights must have num_classes entries")
        if not 1 <= self.min_seg_classes <= self.num_classes:
            raise ValueError(f"{self.name}: min_seg_classes must lie in 1..num_classes")
        if self.min_contrastive_classes != 0 and not 2 <= self.min_contrastive_classes <= self.num_classes:
            raise ValueError(f"{self.name}: min_contrastive_classes must be 0 (all) or lie in 2..num_classes")

    @property
    def contrastive_classes(self) -> int:
        """Distinct labels a slice needs for the contrastive batch (``num_classes`` when 0)."""
        return self.min_contrastive_classes or self.num_classes


@dataclass(frozen=True)
class Split:
    """Volume ids of one experiment: labeled training, unlabeled pool, validation, test."""

    labeled: tuple[str, ...]
    unlabeled: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class SplitTable:
    """Split lists of one dataset, as data.

    Attributes:
        train: ``{(no_of_tr_imgs, comb): labeled ids}``.
        val: ``{(no_of_tr_imgs, comb): validation ids}`` (same keys as ``train``).
        test: test ids (one list per dataset).
        unlabeled_override: ``{(no_of_tr_imgs, comb): unlabeled ids}`` for splits that bring
            their own unlabeled set (e.g. ``ssl4mis``); all others use the dataset's pool.
        test_override: ``{(no_of_tr_imgs, comb): test ids}`` for splits with their own test set.
    """

    train: Mapping[tuple[str, str], tuple[str, ...]]
    val: Mapping[tuple[str, str], tuple[str, ...]]
    test: tuple[str, ...]
    unlabeled_override: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    test_override: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.train) != set(self.val):
            raise ValueError("split table: train and val keys differ")


def ids(numbers: Iterable[int], width: int = 3) -> tuple[str, ...]:
    """Zero-padded id strings, e.g. ``ids([1, 2]) == ("001", "002")``."""
    return tuple(f"{n:0{width}d}" for n in numbers)


def span(first: int, last: int, width: int = 3) -> tuple[str, ...]:
    """Inclusive id range, e.g. ``span(1, 3) == ("001", "002", "003")``."""
    return ids(range(first, last + 1), width)


def any_comb(no_of_tr_imgs: str, value: tuple[str, ...], combs: tuple[str, ...] = COMBS) -> dict:
    """Entries for a list that the originals return for every combination (tr52, trall, ...)."""
    return {(no_of_tr_imgs, c): value for c in combs}


def valid_combinations(table: SplitTable) -> str:
    """Human-readable list of the valid ``no_of_tr_imgs:comb`` pairs, grouped by size."""
    groups: dict[str, list[str]] = {}
    for no, comb in table.train:
        groups.setdefault(no, []).append(comb)
    return "; ".join(f"{no} {{{','.join(sorted(c))}}}" for no, c in groups.items())


def resolve_split(
    name: str, cfg: DatasetConfig, table: SplitTable, no_of_tr_imgs: str, comb_tr_imgs: str
) -> Split:
    """Look up a split; unknown pairs raise ``InputError`` listing the valid ones."""
    key = (str(no_of_tr_imgs), str(comb_tr_imgs))
    if key not in table.train:
        raise InputError(
            f"--no_of_tr_imgs={key[0]} --comb_tr_imgs={key[1]}: no such split for dataset "
            f"'{name}'; valid: {valid_combinations(table)}"
        )
    unlabeled = table.unlabeled_override.get(key, table.train[cfg.unlabeled_pool])
    return Split(
        labeled=tuple(table.train[key]),
        unlabeled=tuple(unlabeled),
        val=tuple(table.val[key]),
        test=tuple(table.test_override.get(key, table.test)),
    )
