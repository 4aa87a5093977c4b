"""Typed, frozen stage configurations: what a stage script's flags resolve to.

One dataclass per stage family (the two stage scripts); no field has a default here: every value
comes from the flag definitions in :mod:`training.flags` (the one place where defaults live), so
library code never restates a default. ``config.json`` of a workdir is :meth:`StageConfig.to_json`
plus the dataset's fixed properties (classes, image size, structure names).
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C", bound="StageConfig")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Settings every stage has.

    Attributes:
        stage: ``global``/``local`` (pre-training) or ``baseline``/``pseudolabel``/``joint``.
        dataset: dataset configuration name (``configs.DATASETS``).
        data_dir: preprocessed data directory.
        workdir: where the stage writes everything.
        init_from: workdir of the previous stage (None: no initialization).
        n_iter: iterations of the stage (pre-training, baseline / fine-tuning).
        max_steps: cap on the iterations (0 = none; smoke runs).
        seed: seed of data sampling and augmentation.
        jit_compile: ``auto``/``true``/``false`` (XLA for the training step).
        num_replicas: logical CPU replicas (distribution without GPUs).
        precision: ``fp32``, ``mixed_bfloat16`` or ``mixed_float16`` (:mod:`models.precision`).
        val_every: validation period in iterations.
        ckpt_every: resumable-checkpoint period in iterations.
        log_every: training-scalar period in iterations.
        ver: version tag (``1`` in the joint stage: stop-gradient prototypes).
        no_of_tr_imgs: volume set (labeled set; pre-training: None = the dataset's unlabeled pool).
        comb_tr_imgs: combination of ``no_of_tr_imgs``.
        override_config: resume a workdir recorded with other training settings
            (:func:`workdir.write_or_check_config`).
    """

    stage: str
    dataset: str
    data_dir: str
    workdir: str
    init_from: str | None
    n_iter: int
    max_steps: int
    seed: int
    jit_compile: str
    num_replicas: int
    precision: str
    val_every: int
    ckpt_every: int
    log_every: int
    ver: int
    no_of_tr_imgs: str | None
    comb_tr_imgs: str
    override_config: bool

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict (what ``config.json`` records)."""
        return dataclasses.asdict(self)

    @property
    def end_step(self) -> int:
        """Iterations this run goes to: ``n_iter`` capped by ``max_steps`` when that is > 0."""
        return capped(self.n_iter, self.max_steps)


def capped(total: int, max_steps: int) -> int:
    """``min(total, max_steps)`` when ``max_steps`` > 0 (smoke runs), else ``total``."""
    return min(int(total), int(max_steps)) if int(max_steps) > 0 else int(total)


@dataclasses.dataclass(frozen=True)
class PretrainConfig(StageConfig):
    """``train_pretrain.py``: global (G^R/G^D-/G^D) and local (L^R/L^D) contrastive pre-training.

    Attributes:
        lr_reg: learning rate.
        temp_fac: temperature tau.
        bt_size: contrastive batch size (global: B images per partition group).
        global_loss_exp_no: 0 G^R, 1 G^D-, 2 G^D.
        n_parts: partitions per volume S.
        bbox_dim: crop height of the global-loss augmentation.
        replicate_gd_zero_block: reproduce the all-zero G^D block (bug 9.2.1).
        local_loss_exp_no: 0 L^R (random slices), 1 L^D (partition-based).
        no_of_decoder_blocks: decoder blocks l pre-trained by the local loss.
        local_reg_size: 1: 3x3 regions, 0: single pixels.
        no_of_local_regions: 9 or 13 positive regions.
        no_of_neg_local_regions: negative regions per positive (L^R).
        wgt_en: 1: shared Dense-128 projection of the region vectors.
    """

    lr_reg: float
    temp_fac: float
    bt_size: int
    global_loss_exp_no: int
    n_parts: int
    bbox_dim: int
    replicate_gd_zero_block: bool
    local_loss_exp_no: int
    no_of_decoder_blocks: int
    local_reg_size: int
    no_of_local_regions: int
    no_of_neg_local_regions: int
    wgt_en: int


@dataclasses.dataclass(frozen=True)
class SelfTrainConfig(StageConfig):
    """``train_selftrain.py``: supervised baseline / fine-tuning, pseudo-labels, PLC joint rounds.

    Attributes:
        lr_seg: learning rate of the segmentation training.
        dsc_loss: 0 weighted CE, 1 Dice without background, 2 Dice with background.
        data_aug: affine augmentation (+ deformation with ``rd_en``).
        rd_en: random deformations.
        ri_en: random intensity on the deformed images.
        sigma: std of the 3x3 deformation grid in pixels.
        batch_size: labeled slices per step.
        crf: dense-CRF refinement of pseudo-labels.
        test_aug_overlap: 1: keep only volumes whose two TTA predictions agree.
        test_f1_threshold: agreement threshold of the TTA filter.
        crf_workers: CRF processes (0 = all cores).
        rounds: self-training rounds.
        n_iter_per_round: iterations per round.
        lamda_local: weight of the pseudo-label local contrastive loss.
        temp_fac: temperature tau.
        no_of_pos_eles: anchor pixels per class and image.
        bt_size: contrastive batch size (joint: image pairs; the pairing table needs 10).
        local_loss_exp_no: 0 intra-image, 1 inter-image prototypes.
        replicate_plc_loss_weighting: the release's 1/D^(B-k) pair weighting (bug 9.3.1).
        plc_global_best: keep the global best across rounds (release: reset at round ends).
        plc_warm_start: round 0 starts from the whole baseline (segmentation head, BN statistics).
        plc_round_floor: a round never ends on a model validating below the one it started from.
        pseudo_label_dir: round-0 pseudo-labels (None: generated from ``init_from``).
    """

    lr_seg: float
    dsc_loss: int
    data_aug: int
    rd_en: int
    ri_en: int
    sigma: float
    batch_size: int
    crf: bool
    test_aug_overlap: int
    test_f1_threshold: float
    crf_workers: int
    rounds: int
    n_iter_per_round: int
    lamda_local: float
    temp_fac: float
    no_of_pos_eles: int
    bt_size: int
    local_loss_exp_no: int
    replicate_plc_loss_weighting: bool
    plc_global_best: bool
    plc_warm_start: bool
    plc_round_floor: bool
    pseudo_label_dir: str | None

    @property
    def joint_end_step(self) -> int:
        """Last iteration of the joint stage: ``rounds * n_iter_per_round`` capped by ``max_steps``."""
        return capped(self.rounds * self.n_iter_per_round, self.max_steps)


def config_from(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a dict holding (at least) every field; extra keys are ignored."""
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in values]
    if missing:
        raise TypeError(f"{cls.__name__}: missing settings {missing}")
    return cls(**{n: values[n] for n in names})
