"""ACDC (cardiac cine MRI, 100 training patients): config and split lists.

Split lists are those of the originals (ORIGINAL_SPEC §5.3). Ids ``"001".."100"`` denote the ED
frame; ``"<id>_ES"`` the ES frame (preprocessed with ``--phases ED,ES``).

Extra split ``ssl4mis`` (DESIGN.md, evaluation conventions): the 70/10/20 patient split used by
the SSL4MIS family of papers, with both ED and ES volumes of every patient. Select it with
``--no_of_tr_imgs ssl4mis3`` (3 labeled patients) or ``ssl4mis7`` (7) and ``--comb_tr_imgs c1``.
Its unlabeled set is the remaining training patients (ED+ES), disjoint from the labeled ones, as
in SSL4MIS; it needs a data dir preprocessed with ``--phases ED,ES`` (the default of
``--layout ssl4mis_h5``, which also checks an SSL4MIS copy's list files against these lists).
"""
from __future__ import annotations

from configs.base import DatasetConfig, SplitTable, any_comb, ids, span

CONFIG = DatasetConfig(
    name="acdc",
    image_size=(192, 192),
    target_resolution=(1.36719, 1.36719),
    num_classes=4,
    struct_names=("rv", "myo", "lv"),
    class_weights=(0.1, 0.3, 0.3, 0.3),
    min_seg_classes=3,
    crf_params=(0.01, 0.5, 10.0, 10.0, 30.0, 30),
    unlabeled_pool=("tr52", "c1"),
    raw_layout="acdc",
)

TEST = span(7, 10) + span(27, 30) + span(47, 50) + span(67, 70) + span(87, 90)
_VAL_A = ("011", "071")
_VAL_B = ("031", "072")
_TR8_BASE = ("002", "022", "042", "062", "095")
TR52 = (
    span(1, 6) + ("012",) + span(17, 26) + span(37, 46) + span(57, 66) + ("072",)
    + span(77, 86) + span(97, 100)
)
TR52_VAL = ("013", "014", "033", "034", "053", "054", "073", "074", "093", "094")
TRALL = tuple(i for i in span(1, 100) if i not in TEST and i not in ("031", "071"))

# ssl4mis (DESIGN.md): patients, then expanded to ED + ES volume ids.
SSL4MIS_VAL_PATIENTS = ids([2, 19, 28, 30, 39, 45, 78, 82, 85, 87])
SSL4MIS_TEST_PATIENTS = ids([1, 7, 8, 11, 13, 22, 24, 33, 52, 59, 64, 65, 66, 68, 75, 80, 81, 83, 84, 93])
SSL4MIS_LABELED3 = ("099", "038", "050")
SSL4MIS_LABELED7 = SSL4MIS_LABELED3 + ("100", "058", "021", "049")
SSL4MIS_TRAIN_PATIENTS = tuple(
    i for i in span(1, 100) if i not in SSL4MIS_VAL_PATIENTS and i not in SSL4MIS_TEST_PATIENTS
)


def _ed_es(patients: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for p in patients for v in (p, f"{p}_ES"))


def _ssl4mis_unlabeled(labeled: tuple[str, ...]) -> tuple[str, ...]:
    return _ed_es(tuple(p for p in SSL4MIS_TRAIN_PATIENTS if p not in labeled))


SSL4MIS_TEST = _ed_es(SSL4MIS_TEST_PATIENTS)

SPLITS = SplitTable(
    train={
        ("tr1", "c1"): ("002",),
        ("tr1", "c2"): ("042",),
        ("tr1", "c3"): ("095",),
        ("tr1", "c4"): ("022",),
        ("tr1", "c5"): ("062",),
        ("tr2", "c1"): ("042", "062"),
        ("tr2", "c2"): ("002", "042"),
        ("tr2", "c3"): ("042", "095"),
        ("tr2", "c4"): ("002", "022"),
        ("tr2", "c5"): ("002", "095"),
        ("tr8", "c1"): _TR8_BASE + ("003", "023", "043"),
        ("tr8", "c2"): _TR8_BASE + ("063", "094", "043"),
        ("tr8", "c3"): _TR8_BASE + ("003", "094", "023"),
        **any_comb("tr52", TR52),
        **any_comb("trall", TRALL),
        ("ssl4mis3", "c1"): _ed_es(SSL4MIS_LABELED3),
        ("ssl4mis7", "c1"): _ed_es(SSL4MIS_LABELED7),
    },
    val={
        ("tr1", "c1"): _VAL_A,
        ("tr1", "c2"): _VAL_B,
        ("tr1", "c3"): _VAL_A,
        ("tr1", "c4"): _VAL_A,
        ("tr1", "c5"): _VAL_A,
        ("tr2", "c1"): _VAL_B,
        ("tr2", "c2"): _VAL_A,
        ("tr2", "c3"): _VAL_B,
        ("tr2", "c4"): _VAL_A,
        ("tr2", "c5"): _VAL_A,
        ("tr8", "c1"): _VAL_A,
        ("tr8", "c2"): _VAL_B,
        ("tr8", "c3"): _VAL_A,
        **any_comb("tr52", TR52_VAL),
        **any_comb("trall", _VAL_A),
        ("ssl4mis3", "c1"): _ed_es(SSL4MIS_VAL_PATIENTS),
        ("ssl4mis7", "c1"): _ed_es(SSL4MIS_VAL_PATIENTS),
    },
    test=TEST,
    unlabeled_override={
        ("ssl4mis3", "c1"): _ssl4mis_unlabeled(SSL4MIS_LABELED3),
        ("ssl4mis7", "c1"): _ssl4mis_unlabeled(SSL4MIS_LABELED7),
    },
    test_override={("ssl4mis3", "c1"): SSL4MIS_TEST, ("ssl4mis7", "c1"): SSL4MIS_TEST},
)
