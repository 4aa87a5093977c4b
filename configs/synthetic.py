"""Built-in synthetic short-axis cardiac dataset (``python -m data.synthetic``), ACDC layout.

Sized for a demo on 2 CPU cores: 64x64 slices at 2.5 mm (a 160 mm field of view holds the
synthetic heart, whose LV+RV span is about 70-110 mm). Splits for 40 patients ``"001".."040"``:
test ``031..040``, validation ``027..030``, training pool ``001..026``. Labeled sets: ``tr1``
c1..c5, ``tr2`` c1..c5, ``tr8`` c1, ``trall`` (all 26 training patients). The unlabeled pool is
the whole training pool (``trall``), i.e. it contains the labeled volumes, as in the published
splits. Patient ``i`` has group ``GROUPS[(i-1) % 5]`` in ``data.synthetic``, so every list
below mixes groups.
"""
from __future__ import annotations

from configs.base import DatasetConfig, SplitTable, any_comb, span

CONFIG = DatasetConfig(
    name="synthetic",
    image_size=(64, 64),
    target_resolution=(2.5, 2.5),
    num_classes=4,
    struct_names=("rv", "myo", "lv"),
    class_weights=(0.1, 0.3, 0.3, 0.3),
    min_seg_classes=3,
    crf_params=(0.01, 0.5, 10.0, 10.0, 30.0, 30),
    unlabeled_pool=("trall", "c1"),
    raw_layout="acdc",
    crf_pixel_mm=(1.36719, 1.36719),  # ACDC's parameters, defined on ACDC's grid (converted to 2.5 mm)
)

NUM_PATIENTS = 40  # default --num_patients of ``python -m data.synthetic``; the splits below cover 001..040
TEST = span(31, 40)
VAL = span(27, 30)
TRALL = span(1, 26)

_TRAIN = {
    ("tr1", "c1"): ("001",),
    ("tr1", "c2"): ("002",),
    ("tr1", "c3"): ("003",),
    ("tr1", "c4"): ("004",),
    ("tr1", "c5"): ("005",),
    ("tr2", "c1"): ("006", "007"),
    ("tr2", "c2"): ("008", "009"),
    ("tr2", "c3"): ("010", "011"),
    ("tr2", "c4"): ("012", "013"),
    ("tr2", "c5"): ("014", "015"),
    ("tr8", "c1"): span(16, 23),
    **any_comb("trall", TRALL),
}

SPLITS = SplitTable(train=_TRAIN, val={k: VAL for k in _TRAIN}, test=TEST)
