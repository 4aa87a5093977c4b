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

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from data import pipeline
from data.errors import InputError
from losses.segmentation import segmentation_loss
from models.io import load_unet
from models.transfer import transfer_weights
from models.unet import build_unet, decoder_block_prefixes
from training import checkpoint as ck
from training import common
from training import loop as loop_lib
from training import steps

SHAPE_KEYS = ("batch_size",)


def transfer_prefixes(init_conf: dict, init_from: str = "") -> tuple[str, ...]:
    """Prefixes copied from a pre-training workdir: ``enc_`` (+ the first l decoder blocks)."""
    stage = init_conf.get("stage")
    if stage == "global":
        return ("enc_",)
    if stage == "local":
        blocks = int(init_conf.get("no_of_decoder_blocks", 1))
        return ("enc_",) + decoder_block_prefixes(blocks)
    if stage in ("baseline", "joint"):
        return ("enc_", "dec_", "seg_")
    raise InputError(f"--init_from={init_from}: workdir of stage {stage!r} cannot initialize a supervised stage "
                     f"(expected a global, local or baseline workdir)")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """What ``--init_from`` names: the weights to load and which layers to copy from them."""

    path: str  # as given: a workdir, a training checkpoint (W/ckpt, W/ckpt/ckpt-N) or a .weights.h5 in a workdir
    prefixes: tuple[str, ...]  # layer-name prefixes copied (by the kind of stage that wrote it)
    num_classes: int  # of the source UNet
    checkpoint: str | None  # checkpoint prefix when ``path`` is a training checkpoint


def resolve_init_from(init_from: str, num_classes: int) -> InitSource:
    """Check ``--init_from`` before anything is written; the kind of source comes from the
    ``config.json`` of the workdir it is, or lies in (``W/ckpt``, ``W/best/model.weights.h5``).

    Raises:
        InputError: missing path, no stage workdir, a stage that cannot initialize a supervised
            stage, another number of classes, a checkpoint folder without checkpoints.
    """
    from evaluation.inference import checkpoint_prefix, find_workdir

    path = Path(init_from)
    if not path.exists() and not Path(f"{init_from}.index").is_file():
        raise InputError(f"--init_from={init_from}: no such file or directory")
    workdir = find_workdir(path)
    if workdir is None:
        raise InputError(f"--init_from={init_from}: no config.json (not a stage workdir, nor a checkpoint or "
                         f"weights file inside one)")
    init_conf = common.read_workdir_config(workdir)
    prefixes = transfer_prefixes(init_conf, init_from)
    src_classes = int(init_conf.get("num_classes", num_classes))
    if src_classes != num_classes and init_conf.get("stage") not in ("global", "local"):
        raise InputError(f"--init_from={init_from}: {src_classes} classes, expected {num_classes}")
    is_ckpt = (path.is_dir() and (path / "checkpoint").is_file()) or Path(f"{init_from}.index").is_file()
    ckpt = checkpoint_prefix(path) if is_ckpt else None
    if is_ckpt and ckpt is None:
        raise InputError(f"--init_from={init_from}: checkpoint folder holds no checkpoint")
    return InitSource(str(init_from), prefixes, src_classes, ckpt)


def init_from_workdir(unet: Any, init_from: str | InitSource, num_classes: int) -> list[str]:
    """Copy weights from a previous stage into ``unet``; returns the copied layer names."""
    from evaluation.inference import load_checkpoint_unet

    source = init_from if isinstance(init_from, InitSource) else resolve_init_from(init_from, num_classes)
    if source.checkpoint is not None:
        src = load_checkpoint_unet(source.checkpoint, source.num_classes)
    else:
        src = load_unet(source.path, num_classes=source.num_classes)
    return transfer_weights(src, unet, source.prefixes)


def run_supervised(conf: common.StageConfig) -> dict[str, Any]:
    """Run (or resume) the baseline / fine-tuning stage described by ``conf``; returns the summary."""
    t_start = time.time()
    conf = common.resolve_dataset(conf)
    source = resolve_init_from(conf.init_from, int(conf.num_classes)) if conf.get("init_from") else None
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
    if not resumed and source is not None:
        copied = init_from_workdir(unet, source, cfg.num_classes)
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
    metrics = loop_lib.MetricsLog(env.out_dir / "metrics.json", start)
    total = common.end_step(conf.n_iter, conf.get("max_steps"))
    lcfg = loop_lib.LoopConfig(workdir=str(env.out_dir), end_step=total, val_every=int(conf.val_every),
                               ckpt_every=int(conf.ckpt_every), is_chief=env.is_chief, desc=conf.stage)
    result = loop_lib.run_loop(
        lcfg, state, step_fn, batches, checkpointer, metrics, validate_fn=validator,
        save_best_fn=lambda step, d: ck.save_best(unet, env.out_dir, step, d),
        writers=env.writers())
    if env.is_chief:
        ck.save_final(unet, env.out_dir)
    summary = {"stage": conf.stage, **result, "transferred_layers": len(copied) if copied else None,
               "seconds": time.time() - t_start, "replicas": env.replicas}
    common.write_summary(env, summary)
    return summary
