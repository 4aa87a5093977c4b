"""MSD Task05 Prostate (T2 channel): config and split lists (ORIGINAL_SPEC §5.3).

Ids are the MSD case numbers zero-padded to 3 digits. Label 1 = PZ, 2 = TZ (MSD convention,
ORIGINAL_SPEC §9.1.1); structure names follow the originals (``pz``, ``cz``). The ``trall`` list
has the originals' missing comma (``"000" "001"``) fixed (§9.1.2).
"""
from __future__ import annotations

from configs.base import DatasetConfig, SplitTable, any_comb

CONFIG = DatasetConfig(
    name="prostate_md",
    image_size=(192, 192),
    target_resolution=(0.625, 0.625),
    num_classes=3,
    struct_names=("pz", "cz"),
    class_weights=(0.1, 0.45, 0.45),
    min_seg_classes=2,
    crf_params=(0.01, 0.5, 10.0, 5.0, 30.0, 30),
    unlabeled_pool=("tr22", "c1"),
    raw_layout="prostate_md",
)

TEST = ("029", "031", "032", "034", "035", "037", "038", "039", "040", "041", "042", "043", "044", "046", "047")
TR22 = ("000", "001", "002", "004", "006", "007", "010", "013", "014", "016", "017", "018", "020", "021",
        "024", "025", "028")
TRALL = ("000", "001", "002", "004", "006", "007", "010", "016", "017", "018", "020", "021", "024", "025",
         "028")
_TR10_BASE = ("000", "001", "002", "004", "006", "007", "010", "016")
_V1 = ("013", "014")  # c1, c4
_V2 = ("017", "020")  # c2
_V3 = ("025", "028")  # c3, c5
_VAL_BY_COMB = {"c1": _V1, "c2": _V2, "c3": _V3, "c4": _V1, "c5": _V3}

_TRAIN = {
    ("tr1", "c1"): ("001",),
    ("tr1", "c2"): ("002",),
    ("tr1", "c3"): ("006",),
    ("tr1", "c4"): ("000",),
    ("tr1", "c5"): ("004",),
    ("tr2", "c1"): ("000", "001"),
    ("tr2", "c2"): ("021", "024"),
    ("tr2", "c3"): ("001", "002"),
    ("tr2", "c4"): ("004", "010"),
    ("tr2", "c5"): ("000", "007"),
    ("tr8", "c1"): ("000", "001", "002", "004", "006", "007", "010", "016"),
    ("tr8", "c2"): ("002", "004", "006", "007", "010", "016", "021", "018"),
    ("tr8", "c3"): ("000", "001", "006", "007", "010", "017", "018", "024"),
    ("tr10", "c1"): _TR10_BASE + ("017", "018"),
    ("tr10", "c2"): _TR10_BASE + ("021", "018"),
    ("tr10", "c3"): _TR10_BASE + ("024", "018"),
    **any_comb("tr22", TR22),
    **any_comb("trall", TRALL),
}
_VAL = {
    **{k: _VAL_BY_COMB[k[1]] for k in _TRAIN if k[0] in ("tr1", "tr2", "tr8", "tr10")},
    **any_comb("tr22", ("013", "014", "020", "028")),
    **any_comb("trall", _V1),
}

SPLITS = SplitTable(train=_TRAIN, val=_VAL, test=TEST)
