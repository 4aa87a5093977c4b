"""Shared fixtures of the training tests: a tiny preprocessed synthetic dataset (64x64, the demo
config) built once per test session, and stage configurations with the scripts' defaults."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.engine.common import StageConfig

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


COMMON = dict(dataset="synthetic", init_from=None, max_steps=0, seed=0, jit_compile="false", num_replicas=1,
              val_every=2, ckpt_every=2, ver=0)
SUPERVISED = dict(no_of_tr_imgs="tr1", comb_tr_imgs="c1", lr_seg=1e-3, dsc_loss=2, data_aug=1, rd_en=1, ri_en=0,
                  sigma=5.0, batch_size=20, crf=False, test_aug_overlap=0, test_f1_threshold=0.9, crf_workers=1)
JOINT = dict(rounds=2, n_iter_per_round=2, lamda_local=0.1, temp_fac=0.1, no_of_pos_eles=3, no_of_neg_eles=3,
             bt_size=10, local_loss_exp_no=1, replicate_plc_loss_weighting=False, plc_global_best=False,
             pseudo_label_dir=None, bbox_dim=150)
PRETRAIN = dict(no_of_tr_imgs=None, comb_tr_imgs="c1", lr_reg=1e-3, temp_fac=0.1, bt_size=12, global_loss_exp_no=2,
                n_parts=4, bbox_dim=100, replicate_gd_zero_block=False, local_loss_exp_no=0, no_of_decoder_blocks=3,
                local_reg_size=1, no_of_local_regions=13, no_of_neg_local_regions=5, wgt_en=1, log_every=1)


def stage_conf(stage: str, data_dir: Path, workdir: Path, **kw) -> StageConfig:
    """Configuration of ``stage`` with the scripts' defaults (tiny iteration counts)."""
    conf = dict(COMMON, stage=stage, data_dir=str(data_dir), workdir=str(workdir), n_iter=3)
    if stage in ("global", "local"):
        conf.update(PRETRAIN)
    else:
        conf.update(SUPERVISED, **JOINT)
    conf.update(kw)
    return StageConfig(conf)
