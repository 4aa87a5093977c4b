"""Shared fixtures of the training tests: a tiny preprocessed synthetic dataset (64x64, the demo
config) built once per test session, and stage configurations with the scripts' defaults."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.config import StageConfig
from training.flags import default_config

NUM_PATIENTS = 40  # the synthetic split lists reference ids 001..040


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Preprocessed synthetic dataset (40 patients, 64x64 slices)."""
    from data.preprocess import preprocess_dataset
    from data.synthetic import generate

    root = tmp_path_factory.mktemp("train_data")
    generate(root / "raw", NUM_PATIENTS, seed=0)
    preprocess_dataset("synthetic", root / "raw", root / "pre")
    return root / "pre"


# Tiny-run settings on top of the scripts' own flag defaults (training.flags).
COMMON = dict(dataset="synthetic", jit_compile="false", val_every=2, ckpt_every=2)
SUPERVISED = dict(no_of_tr_imgs="tr1", crf=False, crf_workers=1, rounds=2, n_iter_per_round=2)
PRETRAIN = dict(log_every=1)


def stage_conf(stage: str, data_dir: Path, workdir: Path, **kw) -> StageConfig:
    """Configuration of ``stage`` with the scripts' flag defaults (tiny iteration counts)."""
    family = PRETRAIN if stage in ("global", "local") else SUPERVISED
    return default_config(stage, **{**COMMON, "data_dir": str(data_dir), "workdir": str(workdir),
                                    "n_iter": 3, **family, **kw})
