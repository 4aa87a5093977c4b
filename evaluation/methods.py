"""What method a trained workdir is, read from its recorded settings (``config.json``), never from a label.

One classification for every table (``run_pipeline.py`` results, ``evaluate.py`` summary.json,
``evaluation.aggregate`` rows, ``--reference`` matching), so a run is always named by what ran:

* ``baseline`` stage, no ``--init_from``: ``baseline`` (``benchmark`` on ``trall``);
  ``--init_from`` a local (GCL + LCL) pre-training: ``gcl_lcl``; from a global one only: ``gcl``
  (no published counterpart in MedIA 2023).
* ``joint`` stage: the initialization (the ``--init_from`` baseline's own init: random or GCL + LCL),
  ``--local_loss_exp_no`` (1 inter / 0 intra) and ``--lamda_local`` (0: self-training without the
  contrastive term) give the paper's row; the port's changes are *deviations* named in the label:
  ``--plc_warm_start``, ``--plc_round_floor``, ``--nocrf``, ``--plc_global_best`` (each makes the
  run a different method: no published counterpart) and the mean-over-pairs weighting (the
  default fix of bug 9.3.1; named in the label, still compared with the paper's row, whose
  ``lamda_local = 0.1`` was chosen under the release's weighting). Warm start + round floor + no CRF
  together (with the mean over pairs) are the named variant ``plc_plus``.

The pipeline's method ids (``run_pipeline.py --methods``) and the MedIA 2023 table's row ids
(``evaluation/reference_medIA2023.csv``) are linked by :data:`PIPELINE_TO_REFERENCE`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

from common.errors import InputError
from workdir import has_config, read_config

# run_pipeline.py method id -> MedIA 2023 reference row id (None: no published counterpart).
PIPELINE_TO_REFERENCE: dict[str, str | None] = {
    "baseline": "baseline", "gcl_lcl": "baseline_gcl_lcl", "selftrain_gcl_lcl": "self_training_gcl_lcl",
    "plc_gcl_lcl": "plc_inter_gcl_lcl", "plc_intra": "plc_intra", "plc": "plc_inter", "plc_plus": None,
    "benchmark": "benchmark",
}
LABELS: dict[str, str] = {
    "baseline": "Baseline (random init)",
    "benchmark": "Benchmark (all labels, random init)",
    "gcl_lcl": "GCL+LCL pre-training + fine-tuning",
    "gcl": "GCL pre-training + fine-tuning (no LCL)",
    "selftrain_gcl_lcl": "Self-training from GCL+LCL (release, no contrastive term)",
    "plc_gcl_lcl": "PLC inter from GCL+LCL (release)",
    "plc_intra": "PLC intra (release)",
    "plc": "PLC (release)",
    "plc_plus": "PLC+ (port variant: warm start, round floor, no CRF)",
}
# Joint-stage settings that make a different method than the paper's (flag, value that deviates, name).
VARIANT_FLAGS = (("plc_warm_start", True, "warm start"), ("plc_round_floor", True, "round floor"),
                 ("crf", False, "no CRF"), ("plc_global_best", True, "global best"))
PLUS_DEVIATIONS = ("warm start", "round floor", "no CRF")
PAPER_LAMDA_LOCAL = 0.1


@dataclasses.dataclass(frozen=True)
class RunMethod:
    """The method of one run.

    Attributes:
        method: pipeline method id (``baseline``, ``gcl_lcl``, ..., ``plc_plus``) or None (no named method).
        label: what ran, in words (every table prints this).
        reference: row id of the MedIA 2023 table whose settings the run has, or None.
        reason: why there is no reference row (empty when there is one).
    """

    method: str | None
    label: str
    reference: str | None
    reason: str = ""


ConfigReader = Callable[[Any], dict[str, Any]]


def _read(workdir: Any) -> dict[str, Any]:
    """``config.json`` of ``workdir`` ({} when the workdir or its config is gone)."""
    if not workdir or not Path(str(workdir)).is_dir() or not has_config(workdir):
        return {}
    return read_config(workdir)


def _init_kind(config: dict[str, Any], reader: ConfigReader) -> str:
    """``random``, ``gcl_lcl``, ``gcl`` or ``unknown``: how a baseline stage's weights started."""
    init = config.get("init_from")
    if not init:
        return "random"
    stage = reader(init).get("stage")
    return {"local": "gcl_lcl", "global": "gcl"}.get(str(stage), "unknown")


def _no_counterpart(method: str | None, label: str, reason: str) -> RunMethod:
    return RunMethod(method, label, None, reason)


def _named(method: str, label: str | None = None) -> RunMethod:
    return RunMethod(method, label or LABELS[method], PIPELINE_TO_REFERENCE[method])


def classify(config: dict[str, Any], no_of_tr_imgs: str | None = None,
             reader: ConfigReader = _read) -> RunMethod:
    """The :class:`RunMethod` of a run from its ``config.json`` (module docstring for the rules).

    Args:
        config: the run's recorded settings ({}: unknown, nothing is matched).
        no_of_tr_imgs: the labeled set (default: the config's); ``trall`` makes a baseline the benchmark.
        reader: reads the ``config.json`` of an ``init_from`` workdir (tests pass a dict lookup).
    """
    stage = config.get("stage")
    tr = no_of_tr_imgs or config.get("no_of_tr_imgs")
    if not stage:
        return _no_counterpart(None, "unknown (no config.json recorded)", "no recorded settings")
    if stage == "baseline":
        kind = _init_kind(config, reader)
        if kind == "random":
            return _named("benchmark" if tr == "trall" else "baseline")
        if kind == "gcl_lcl":
            return _named("gcl_lcl")
        if kind == "gcl":
            return _no_counterpart("gcl", LABELS["gcl"], "the MedIA 2023 table has no GCL-only row")
        return _no_counterpart(None, "fine-tuned baseline (initialization unknown)",
                               f"init_from {config.get('init_from')} has no readable config.json")
    if stage == "joint":
        return _classify_joint(config, reader)
    return _no_counterpart(None, f"{stage} stage", f"a {stage} stage is not a segmentation method")


def _classify_joint(config: dict[str, Any], reader: ConfigReader) -> RunMethod:
    base_conf = reader(config.get("init_from"))
    kind = _init_kind(base_conf, reader) if base_conf.get("stage") == "baseline" else "unknown"
    inter = int(config.get("local_loss_exp_no", 1)) == 1
    lamda = float(config.get("lamda_local", PAPER_LAMDA_LOCAL))
    deviations = [name for key, value, name in VARIANT_FLAGS if key in config and bool(config[key]) == value]
    notes = [] if config.get("replicate_plc_loss_weighting", True) else ["mean-over-pairs weighting"]
    if lamda == 0.0:
        base = "Self-training from GCL+LCL" if kind == "gcl_lcl" else "Self-training"
        method = "selftrain_gcl_lcl" if kind == "gcl_lcl" else None
        notes = ["no contrastive term"]  # the pair weighting has no effect without the contrastive term
    elif kind == "gcl_lcl":
        base, method = f"PLC {'inter' if inter else 'intra'} from GCL+LCL", "plc_gcl_lcl" if inter else None
    elif kind == "random":
        base, method = ("PLC" if inter else "PLC intra"), ("plc" if inter else "plc_intra")
    else:
        base, method = f"PLC {'inter' if inter else 'intra'} (baseline init unknown)", None
    if not math.isclose(lamda, PAPER_LAMDA_LOCAL) and lamda != 0.0:
        deviations.append(f"lamda_local={lamda:g}")
    if tuple(deviations) == PLUS_DEVIATIONS and method == "plc":
        # PLC+ uses the mean over pairs (the stage scripts' default); the release weighting is the note here.
        plus_note = "" if "mean-over-pairs weighting" in notes else "; the release's pair weighting"
        return _no_counterpart("plc_plus", LABELS["plc_plus"] + plus_note,
                               "PLC+ is the port's variant: the paper has no such row")
    if deviations:
        return _no_counterpart(None, f"{base} (modified: {', '.join(deviations + notes)})",
                               f"settings differ from the paper's: {', '.join(deviations)}")
    label = f"{base} (release{''.join(f', {n}' if n == 'no contrastive term' else f'; {n}' for n in notes)})"
    if method is None:
        reason = ("the MedIA 2023 table has no such row" if kind in ("random", "gcl_lcl")
                  else f"init_from {config.get('init_from')}: the baseline's initialization is unknown")
        return _no_counterpart(None, label, reason)
    return RunMethod(method, label, PIPELINE_TO_REFERENCE[method])


def classify_workdir(workdir: str | Path, no_of_tr_imgs: str | None = None) -> RunMethod:
    """:func:`classify` of ``workdir``'s ``config.json``.

    Raises:
        InputError: the workdir has no readable ``config.json``.
    """
    if not has_config(workdir):
        raise InputError(f"{workdir}: no config.json (not a stage workdir)")
    return classify(read_config(workdir), no_of_tr_imgs)
