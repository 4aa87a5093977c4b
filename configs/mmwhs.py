"""MM-WHS 2017 MR (whole heart, 7 structures): config and split lists (ORIGINAL_SPEC §5.3).

Ids ``"1001".."1020"``; raw labels 205, 420, 500, 550, 600, 820, 850 are remapped to 1..7
(:data:`LABEL_MAP`) by the reader. The originals define no ``trall`` list for MMWHS.
"""
from __future__ import annotations

from configs.base import DatasetConfig, SplitTable, any_comb, span

CONFIG = DatasetConfig(
    name="mmwhs",
    image_size=(160, 160),
    target_resolution=(1.5, 1.5),
    num_classes=8,
    struct_names=("myo", "la", "lv", "ra", "rv", "aa", "pa"),
    class_weights=(0.09,) + (0.13,) * 7,
    min_seg_classes=3,
    crf_params=(0.01, 0.5, 10.0, 10.0, 30.0, 30),
    unlabeled_pool=("tr10", "c1"),
    raw_layout="mmwhs",
)

# MM-WHS label value -> class index (Myo, LA, LV, RA, RV, AA, PA).
LABEL_MAP = {0: 0, 205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}

TEST = span(1011, 1020, width=4)
TR10 = span(1001, 1010, width=4)


def _tr10_except(*excluded: str) -> tuple[str, ...]:
    return tuple(i for i in TR10 if i not in excluded)


_VA = ("1002", "1005")
_VB = ("1001", "1008")
_VC = ("1007", "1002")

SPLITS = SplitTable(
    train={
        ("tr1", "c1"): ("1003",),
        ("tr1", "c2"): ("1006",),
        ("tr1", "c3"): ("1008",),
        ("tr1", "c4"): ("1001",),
        ("tr1", "c5"): ("1009",),
        ("tr2", "c1"): ("1001", "1003"),
        ("tr2", "c2"): ("1009", "1008"),
        ("tr2", "c3"): ("1006", "1002"),
        ("tr2", "c4"): ("1010", "1007"),
        ("tr8", "c1"): _tr10_except("1002", "1005"),
        ("tr8", "c2"): _tr10_except("1001", "1008"),
        ("tr8", "c3"): _tr10_except("1002", "1007"),
        **any_comb("tr10", TR10),
    },
    val={
        ("tr1", "c1"): _VA,
        ("tr1", "c2"): _VB,
        ("tr1", "c3"): _VC,
        ("tr1", "c4"): _VA,
        ("tr1", "c5"): _VC,
        ("tr2", "c1"): _VA,
        ("tr2", "c2"): _VC,
        ("tr2", "c3"): _VB,
        ("tr2", "c4"): ("1004", "1008"),
        ("tr8", "c1"): _VA,
        ("tr8", "c2"): _VB,
        ("tr8", "c3"): _VC,
        **any_comb("tr10", ("1002", "1005", "1008", "1010")),
    },
    test=TEST,
)
