"""Shared fixtures of the training tests: a tiny preprocessed synthetic dataset (64x64, the demo
config) built once per test session, and stage configurations built by the stage scripts from their
own flags (tests/_scripts.py), so that a flag that stops reaching the configuration fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests._scripts import STAGE_FUNCTIONS, argv_for, stage_config
from tests._shared import computed_once

NUM_PATIENTS = 40  # the synthetic split lists reference ids 001..040


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Preprocessed synthetic dataset (40 patients, 64x64 slices), made once per test run (also
    under xdist: tests/_shared.py); read-only for the tests."""

    def make(root: Path) -> dict:
        from data.preprocess import preprocess_dataset
        from data.synthetic import generate

        generate(root / "raw", NUM_PATIENTS, seed=0)
        preprocess_dataset("synthetic", root / "raw", root / "pre")
        return {}

    root, _ = computed_once(tmp_path_factory, "train_data", make)
    return root / "pre"


# Tiny settings on top of the scripts' own defaults (everything else comes from their flags).
TINY_COMMON = dict(dataset="synthetic", n_iter=3, jit_compile="false", val_every=2, ckpt_every=2)
TINY = {"train_pretrain.py": dict(log_every=1),
        "train_selftrain.py": dict(no_of_tr_imgs="tr1", crf=False, crf_workers=1, rounds=2, n_iter_per_round=2)}


def stage_conf(stage: str, data_dir: Path, workdir: Path, **kw):
    """Configuration of ``stage`` as its script builds it from its flags: the tiny settings above,
    then ``kw`` (flag values; None = the flag's default), given as command-line arguments."""
    script = STAGE_FUNCTIONS[stage][0]
    values = dict(TINY_COMMON, **TINY[script], data_dir=str(data_dir), workdir=str(workdir))
    values.update(kw)
    return stage_config(stage, argv_for(values))
