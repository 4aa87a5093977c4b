"""Supervised stage: the baseline of ORIGINAL_SPEC §4.1 and the fine-tuning of §4.2.

Per iteration 20 labeled slices drawn with replacement, affine augmentation + random deformation
(``--rd_en``), one Adam step on the ``--dsc_loss`` loss (default Dice with background); validation
Dice at native resolution every ``val_every`` iterations, best weights kept in ``W/best``.

With ``init_from`` a pre-training workdir this is the fine-tuning stage of the 2020 pipeline: the
encoder (global stage) or the encoder and the first ``l`` decoder blocks (local stage) are copied
(trainable weights only, BN statistics stay fresh, §8.1); the rest starts from random init.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import tensorflow as tf

from data import pipeline
from common.errors import InputError
from losses.segmentation import segmentation_loss
from models.transfer import transfer_weights
from models.unet import build_unet, decoder_block_prefixes
from training.engine import checkpoint as ck
from training.engine import common
from training.engine import loop as loop_lib
from training.engine import steps
import workdir as wdir

SHAPE_KEYS = ("batch_size",)


def transfer_prefixes(init_from: str) -> tuple[str, ...]:
    """Prefixes copied from a pre-training workdir: ``enc_`` (+ the first l decoder blocks)."""
    stage = wdir.stage_of(init_from)
    if stage == "global":
        return ("enc_",)
    if stage == "local":
        return ("enc_",) + decoder_block_prefixes(wdir.decoder_blocks_of(init_from))
    if stage in ("baseline", "joint"):
        return ("enc_", "dec_", "seg_")
    raise InputError(f"--init_from: workdir of stage {stage!r} cannot initialize a supervised stage "
                     f"(expected a global, local or baseline workdir)")


def init_from_workdir(unet: Any, init_from: str, num_classes: int) -> list[str]:
    """Copy weights from a previous stage into ``unet``; returns the copied layer names."""
    src_classes = wdir.num_classes_of(init_from)
    if src_classes != num_classes and wdir.stage_of(init_from) not in ("global", "local"):
        raise InputError(f"--init_from={init_from}: {src_classes} classes, expected {num_classes}")
    src = wdir.load_unet(init_from, num_classes=src_classes)
    return transfer_weights(src, unet, transfer_prefixes(init_from))


def run_supervised(conf: common.StageConfig) -> dict[str, Any]:
    """Run (or resume) the baseline / fine-tuning stage described by ``conf``; returns the summary."""
    t_start = time.time()
    conf = common.resolve_dataset(conf)
    env = common.prepare(conf, SHAPE_KEYS)
    cfg, strategy = env.cfg, env.strategy
    labeled = common.load_labeled(conf.data_dir, env.split.labeled, "labeled")
    with strategy.scope():
        unet = build_unet(cfg.num_classes, tuple(cfg.image_size))
        if env.replicas > 1:
            steps.synchronize_batchnorm(unet)
    variables = unet.trainable_variables
    optimizer = steps.make_optimizer(conf.lr_seg, variables, strategy)
    state = ck.TrainState()
    checkpointer = ck.Checkpointer(env.out_dir / "ckpt", restore_from=env.workdir / "ckpt", model=unet,
                                   optimizer=optimizer, state=state)
    resumed = checkpointer.restore_latest()
    copied: list[str] = []
    if not resumed and conf.get("init_from"):
        copied = init_from_workdir(unet, conf.init_from, cfg.num_classes)
        loop_lib.log(f"[{conf.stage}] initialized {len(copied)} layers from {conf.init_from}")
    start = int(state.step.numpy())
    if resumed:
        loop_lib.log(f"[{conf.stage}] resuming from step {start}")

    seg_loss = functools.partial(segmentation_loss, dsc_loss=int(conf.dsc_loss),
                                 class_weights=cfg.class_weights)
    compute = steps.seg_compute(unet, seg_loss, jit_loss=env.jit and env.replicas > 1)
    step_fn = steps.make_train_step(strategy, compute, variables, optimizer, jit_compile=env.jit,
                                    state_variables=unet.non_trainable_variables)
    base_seed = common.data_seed(conf.seed, start)
    images = [v.image for v in labeled]
    labels = [v.label for v in labeled]

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.labeled_batches(
            images, labels, cfg.num_classes, batch_size=int(conf.batch_size),
            seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id),
            augment=bool(conf.data_aug), deform=bool(conf.rd_en) and bool(conf.data_aug),
            intensity=bool(conf.ri_en), sigma=float(conf.sigma))

    batches = common.distribute(strategy, dataset_fn)
    validator = common.Validator(conf.data_dir, env.split.val, cfg, unet)
    metrics = wdir.MetricsLog(env.out_dir, start)
    total = common.end_step(conf.n_iter, conf.get("max_steps"))
    lcfg = loop_lib.LoopConfig(workdir=str(env.out_dir), end_step=total, val_every=int(conf.val_every),
                               ckpt_every=int(conf.ckpt_every), is_chief=env.is_chief, desc=conf.stage)
    result = loop_lib.run_loop(
        lcfg, state, step_fn, batches, checkpointer, metrics, validate_fn=validator,
        save_best_fn=lambda step, d: wdir.save_best(unet, env.out_dir, step, d),
        writers=env.writers())
    if env.is_chief:
        wdir.save_final(unet, env.out_dir)
    summary = {"stage": conf.stage, **result, "transferred_layers": len(copied) if copied else None,
               "seconds": time.time() - t_start, "replicas": env.replicas}
    common.write_summary(env, summary)
    return summary
