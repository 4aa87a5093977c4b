"""Contrastive pre-training of the 2020 pipeline (ORIGINAL_SPEC §3.2, §3.3, §4.2).

* ``global``: encoder + g1 trained with G^R / G^D- / G^D on the unlabeled pool (no validation; the
  final weights are kept, as the original).
* ``local``: encoder copied from ``--init_from`` (a global workdir) and excluded from the optimizer
  while its BatchNorm still runs in training mode (§3.3, §8.1); the first ``l`` decoder blocks + g2
  (+ the shared Dense-128 region projection with ``--wgt_en 1``) trained with L^R / L^D. The L^R
  batch is 10 pairs whatever ``--bt_size`` says (the release ignored it, bug 9.2.6); L^D uses the
  hard-coded 3 volumes x 4 partitions.

Both write the full UNet (``W/final/model.weights.h5``, untrained parts at their random init) so
that the fine-tuning stage loads it with ``workdir.load_unet`` and copies what it needs.
"""
from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf

import configs
from common.errors import InputError, check_choice
from data import augment as A
from data import pipeline, store
from losses.global_contrastive import global_contrastive_loss
from losses.local_contrastive import local_contrastive_loss
from models.heads import build_g1, build_g2
from models.transfer import transfer_weights
from models.unet import DECODER_BLOCK_CHANNELS, DECODER_BLOCK_OUTPUTS, ENCODER_OUTPUT, build_unet, endpoints_model
import workdir as wdir
from training.config import PretrainConfig
from training.engine import loop as loop_lib
from training.engine import steps
from training.engine.env import data_seed
from training.engine.runner import StageRun, Task, run_stage

GLOBAL_SHAPE_KEYS = ("global_loss_exp_no", "bt_size", "n_parts")
LOCAL_SHAPE_KEYS = ("local_loss_exp_no", "no_of_decoder_blocks", "local_reg_size", "wgt_en",
                    "no_of_local_regions")
LR_PAIRS = 10  # L^R batch of the release (bug 9.2.6)


def crop_settings(image_size: tuple[int, int], bbox_dim: int) -> dict[str, Any]:
    """Crop parameters of ``crop_batch``: the originals' for 160-192 px images, scaled for small
    ones (the synthetic 64 px dataset), where a 100 px box would not fit."""
    h, w = image_size
    if min(h, w) >= 160:
        return {"bbox_dim": int(bbox_dim), "bbox_dim_y": A.CROP_BOX, "crop_offset_range": A.CROP_OFFSET_RANGE}
    p = A.crop_params_for_size(h, w)
    return {"bbox_dim": int(p["bbox_dim"]), "bbox_dim_y": int(p["bbox_dim_y"]),
            "crop_offset_range": tuple(p["offset_range"])}


class _PretrainTask(Task):
    """What global and local contrastive pre-training share: the unlabeled volumes, no validation,
    the ``lr_reg`` Adam, the pool recorded in ``config.json``."""

    validates = False

    @classmethod
    def split_key(cls, conf: PretrainConfig) -> tuple[str, str]:
        """The volumes pre-trained on: ``--no_of_tr_imgs`` or the dataset's unlabeled pool."""
        if conf.no_of_tr_imgs:
            return (conf.no_of_tr_imgs, conf.comb_tr_imgs)
        return tuple(configs.get_config(conf.dataset, conf.data_dir).unlabeled_pool)

    @classmethod
    def config_extra(cls, conf: PretrainConfig) -> dict[str, Any]:
        return {"pool": list(cls.split_key(conf))}

    def _load_images(self) -> None:
        self.images = [v.image for v in store.load_volumes(self.conf.data_dir, self.env.split.labeled)]

    def state_variables(self) -> list:
        return self.unet.non_trainable_variables + self.models["head"].non_trainable_variables

    @property
    def learning_rate(self) -> float:
        return self.conf.lr_reg

    def _compute(self, loss: Any, jit_loss: bool) -> steps.ComputeFn:
        return steps.contrastive_compute(self.backbone, self.models["head"], loss, f"{self.conf.stage}_loss",
                                         jit_loss=jit_loss)

    def summary(self, run: StageRun) -> dict[str, Any]:
        last = run.metrics.data["train"][-1] if run.metrics.data["train"] else {}
        loop_lib.log(f"[{self.conf.stage}] step {run.result['step']} loss {last.get('loss')}")
        return {**run.result, "final_loss": last.get("loss")}


class GlobalPretrainTask(_PretrainTask):
    """Global contrastive pre-training of the encoder + g1 (G^R / G^D- / G^D)."""

    shape_keys = GLOBAL_SHAPE_KEYS

    @classmethod
    def check(cls, conf: PretrainConfig) -> None:
        check_choice("global_loss_exp_no", conf.global_loss_exp_no, pipeline.GLOBAL_LOSS_EXPS)

    def build(self) -> dict[str, Any]:
        self._load_images()
        unet = build_unet(self.cfg.num_classes, tuple(self.cfg.image_size))
        self.backbone = endpoints_model(unet, ENCODER_OUTPUT)
        head = build_g1(tuple(self.backbone.output.shape[1:]))
        self.projection = None
        return {"model": unet, "head": head}

    def trainable_variables(self) -> list:
        return steps.variables_of([self.backbone, self.models["head"]])

    def compute_fn(self) -> steps.ComputeFn:
        conf = self.conf
        loss = functools.partial(global_contrastive_loss, exp_no=conf.global_loss_exp_no,
                                 bt_size=conf.bt_size, n_parts=conf.n_parts, temperature=conf.temp_fac)
        return self._compute(loss, jit_loss=True)

    def dataset_fn(self, start_step: int):
        conf, images = self.conf, self.images
        base_seed = data_seed(conf.seed, start_step)
        crop = crop_settings(tuple(self.cfg.image_size), conf.bbox_dim)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.global_loss_batches(
                images, conf.global_loss_exp_no, bt_size=conf.bt_size, n_parts=conf.n_parts,
                seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id),
                replicate_gd_zero_block=conf.replicate_gd_zero_block, **crop)
        return dataset_fn


class LocalPretrainTask(_PretrainTask):
    """Local contrastive pre-training of l decoder blocks + g2 (L^R / L^D) on a frozen encoder."""

    shape_keys = LOCAL_SHAPE_KEYS

    @classmethod
    def check(cls, conf: PretrainConfig) -> None:
        check_choice("local_loss_exp_no", conf.local_loss_exp_no, pipeline.LOCAL_LOSS_EXPS)
        if not 1 <= conf.no_of_decoder_blocks <= 5:
            raise InputError(f"--no_of_decoder_blocks must be in 1..5, got {conf.no_of_decoder_blocks}")
        if conf.no_of_local_regions not in (9, 13):
            raise InputError(f"--no_of_local_regions must be 9 or 13, got {conf.no_of_local_regions}")

    def build(self) -> dict[str, Any]:
        conf = self.conf
        self._load_images()
        unet = build_unet(self.cfg.num_classes, tuple(self.cfg.image_size))
        block = conf.no_of_decoder_blocks
        self.backbone = endpoints_model(unet, DECODER_BLOCK_OUTPUTS[block - 1])
        head, self.projection = build_g2(DECODER_BLOCK_CHANNELS[block - 1], conf.wgt_en, conf.local_reg_size)
        models = {"model": unet, "head": head}
        if self.projection is not None:
            models["projection"] = self.projection
        return models

    def trainable_variables(self) -> list:
        # Encoder excluded from the update; its BN layers still run in training mode.
        return steps.variables_of([self.backbone], exclude_prefixes=("enc_",)) + steps.variables_of(
            [self.models["head"], self.projection])

    def initialize(self) -> None:
        if self.conf.init_from:
            src = wdir.load_unet(self.conf.init_from, num_classes=self.cfg.num_classes)
            copied = transfer_weights(src, self.unet, ("enc_",))
            loop_lib.log(f"[local] encoder initialized from {self.conf.init_from} ({len(copied)} layers)")
        else:
            loop_lib.log("[local] no --init_from: the frozen encoder keeps its random initialization")

    def compute_fn(self) -> steps.ComputeFn:
        conf = self.conf
        exp_no = conf.local_loss_exp_no
        loss = functools.partial(
            local_contrastive_loss, exp_no=exp_no, num_regions=conf.no_of_local_regions,
            region_size=conf.local_reg_size,
            num_negatives=conf.no_of_neg_local_regions if exp_no == 0 else None,
            temperature=conf.temp_fac, projection=self.projection)
        return self._compute(loss, jit_loss=self.projection is None or self.env.xla.losses_with_variables)

    def dataset_fn(self, start_step: int):
        conf, images = self.conf, self.images
        base_seed = data_seed(conf.seed, start_step)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.local_loss_batches(images, conf.local_loss_exp_no, bt_size=LR_PAIRS,
                                               seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id))
        return dataset_fn


TASKS: dict[str, type[_PretrainTask]] = {"global": GlobalPretrainTask, "local": LocalPretrainTask}


def run_pretrain(conf: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) ``--stage global`` or ``--stage local``; returns the summary."""
    return run_stage(TASKS[conf.stage], conf)
