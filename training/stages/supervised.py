"""Supervised stage: the baseline of ORIGINAL_SPEC §4.1 and the fine-tuning of §4.2.

Per iteration 20 labeled slices drawn with replacement, affine augmentation + random deformation
(``--rd_en``), one Adam step on the ``--dsc_loss`` loss (default Dice with background); validation
Dice at native resolution every ``val_every`` iterations, best weights kept in ``W/best``.

With ``init_from`` a pre-training workdir this is the fine-tuning stage of the 2020 pipeline: the
encoder (global stage) or the encoder and the first ``l`` decoder blocks (local stage) are copied
(trainable weights only, BN statistics stay fresh, §8.1); the rest starts from random init. From a
baseline or joint workdir everything trainable is copied. ``init_from`` may also name a training
checkpoint (``W/ckpt``: the newest; ``W/ckpt/ckpt-N``) or a ``.weights.h5`` file of a workdir: the
kind comes from that workdir's ``config.json``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import tensorflow as tf

from data import pipeline
from common.errors import InputError
from losses.segmentation import segmentation_loss
from models.transfer import transfer_weights
from models.unet import build_unet, decoder_block_prefixes
from training.config import SelfTrainConfig
from training.engine import loop as loop_lib
from training.engine import steps
from training.engine.env import data_seed, load_labeled
from training.engine.runner import StageRun, Task, labeled_arrays, run_stage
import workdir as wdir

SHAPE_KEYS = ("batch_size",)


def source_workdir(init_from: str) -> Path:
    """The stage workdir ``--init_from`` is, or lies in (``W/ckpt``, ``W/ckpt/ckpt-N``,
    ``W/best/model.weights.h5``): its ``config.json`` says what kind of source it is.

    Raises:
        InputError: missing path, or no stage workdir there.
    """
    path = Path(init_from)
    if not path.exists() and not Path(f"{init_from}.index").is_file():
        raise InputError(f"--init_from={init_from}: no such file or directory")
    workdir = wdir.find_workdir(path)
    if workdir is None:
        raise InputError(f"--init_from={init_from}: no config.json (not a stage workdir, nor a checkpoint or "
                         f"weights file inside one)")
    return workdir


def transfer_prefixes(init_from: str) -> tuple[str, ...]:
    """Prefixes copied from a pre-training workdir: ``enc_`` (+ the first l decoder blocks)."""
    workdir = source_workdir(init_from)
    stage = wdir.stage_of(workdir)
    if stage == "global":
        return ("enc_",)
    if stage == "local":
        return ("enc_",) + decoder_block_prefixes(wdir.decoder_blocks_of(workdir))
    if stage in ("baseline", "joint"):
        return ("enc_", "dec_", "seg_")
    raise InputError(f"--init_from={init_from}: workdir of stage {stage!r} cannot initialize a supervised stage "
                     f"(expected a global, local or baseline workdir)")


def source_classes(init_from: str, num_classes: int) -> int:
    """Classes of the ``--init_from`` UNet; a baseline / joint source must have ``num_classes``."""
    workdir = source_workdir(init_from)
    src_classes = wdir.num_classes_of(workdir)
    if src_classes != num_classes and wdir.stage_of(workdir) not in ("global", "local"):
        raise InputError(f"--init_from={init_from}: {src_classes} classes, expected {num_classes}")
    return src_classes


def init_from_workdir(unet: Any, init_from: str, num_classes: int) -> list[str]:
    """Copy weights from a previous stage into ``unet``; returns the copied layer names.

    ``init_from``: a stage workdir (its ``best/``, else ``final/`` weights), a training checkpoint
    of one (``W/ckpt``: the newest; ``W/ckpt/ckpt-N``) or a ``.weights.h5`` file in one.
    """
    src = wdir.load_unet(init_from, num_classes=source_classes(init_from, num_classes))
    return transfer_weights(src, unet, transfer_prefixes(init_from))


class SupervisedTask(Task):
    """Baseline / fine-tuning: the UNet trained with the segmentation loss on the labeled set."""

    shape_keys = SHAPE_KEYS

    @classmethod
    def check(cls, conf: SelfTrainConfig) -> None:
        """A bad ``--init_from`` is refused before the workdir is written."""
        if conf.init_from:
            import configs

            transfer_prefixes(conf.init_from)
            num_classes = configs.get_config(conf.dataset, conf.data_dir).num_classes
            source_classes(conf.init_from, int(num_classes))
            try:
                wdir.model_source(conf.init_from)  # the workdir holds weights
            except InputError as exc:
                raise InputError(f"--init_from={exc}") from None

    def build(self) -> dict[str, Any]:
        self.labeled = load_labeled(self.conf.data_dir, self.env.split.labeled, "labeled")
        self.copied: list[str] = []  # layers copied from --init_from (fresh start only)
        return {"model": build_unet(self.cfg.num_classes, tuple(self.cfg.image_size))}

    def trainable_variables(self) -> list:
        return self.unet.trainable_variables

    @property
    def learning_rate(self) -> float:
        return self.conf.lr_seg

    def initialize(self) -> None:
        if self.conf.init_from:
            self.copied = init_from_workdir(self.unet, self.conf.init_from, self.cfg.num_classes)
            loop_lib.log(f"[{self.conf.stage}] initialized {len(self.copied)} layers from {self.conf.init_from}")

    def compute_fn(self) -> steps.ComputeFn:
        seg_loss = functools.partial(segmentation_loss, dsc_loss=self.conf.dsc_loss,
                                     class_weights=self.cfg.class_weights)
        return steps.seg_compute(self.unet, seg_loss, jit_loss=self.env.xla.seg_losses)

    def dataset_fn(self, start_step: int):
        conf, cfg = self.conf, self.cfg
        base_seed = data_seed(conf.seed, start_step)
        images, labels = labeled_arrays(self.labeled)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.labeled_batches(
                images, labels, cfg.num_classes, batch_size=conf.batch_size,
                seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id),
                augment=bool(conf.data_aug), deform=bool(conf.rd_en) and bool(conf.data_aug),
                intensity=bool(conf.ri_en), sigma=conf.sigma)

        return dataset_fn

    def summary(self, run: StageRun) -> dict[str, Any]:
        return {**run.result, "transferred_layers": len(self.copied) if self.copied else None}


def run_supervised(conf: SelfTrainConfig) -> dict[str, Any]:
    """Run (or resume) the baseline / fine-tuning stage described by ``conf``; returns the summary."""
    return run_stage(SupervisedTask, conf)
