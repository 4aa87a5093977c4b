"""The stage registry: one table of every stage, the script family that runs it, its config class and
the library function that trains it. ``training.flags`` (the stage scripts) and ``training.pipeline``
(``run_pipeline.py``) both read it; nothing recovers a family from a file name.

No TensorFlow at import: the stage functions are imported by :func:`run_function`, when a stage runs
(after the devices are configured, and never for ``--help`` or a flag error).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from training.config import PretrainConfig, SelfTrainConfig, StageConfig


@dataclasses.dataclass(frozen=True)
class Family:
    """A stage script and what it parses its flags to.

    Attributes:
        name: ``pretrain`` or ``selftrain`` (the key of ``training.flags.SCRIPT_DEFAULTS``).
        script: the script file at the repository root.
        config_class: the typed config its flags become.
        stages: the values its ``--stage`` accepts.
    """

    name: str
    script: str
    config_class: type[StageConfig]
    stages: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "pretrain": Family("pretrain", "train_pretrain.py", PretrainConfig, ("global", "local")),
    "selftrain": Family("selftrain", "train_selftrain.py", SelfTrainConfig, ("baseline", "pseudolabel", "joint")),
}
BY_SCRIPT: dict[str, Family] = {f.script: f for f in FAMILIES.values()}
BY_STAGE: dict[str, Family] = {stage: f for f in FAMILIES.values() for stage in f.stages}


def family_of(stage: str) -> Family:
    """The family (script) a stage belongs to."""
    try:
        return BY_STAGE[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}") from None


def run_function(stage: str) -> Callable[[StageConfig], dict[str, Any]]:
    """The library function that runs ``stage`` (looked up when called, so that a replaced one is found)."""
    family_of(stage)
    # Imported here, not at the top: the stage modules load TensorFlow, which the scripts' flag parsing
    # and --help must not (and the devices are configured before it starts).
    from training.stages import joint, pretrain, pseudolabel, supervised

    return {"global": pretrain.run_pretrain, "local": pretrain.run_pretrain, "baseline": supervised.run_supervised,
            "pseudolabel": pseudolabel.run_pseudolabel, "joint": joint.run_joint}[stage]
