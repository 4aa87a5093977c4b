"""Contrastive pre-training of the 2020 pipeline (ORIGINAL_SPEC §3.2, §3.3, §4.2).

* ``global``: encoder + g1 trained with G^R / G^D- / G^D on the unlabeled pool (no validation; the
  final weights are kept, as the original).
* ``local``: encoder copied from ``--init_from`` (a global workdir) and excluded from the optimizer
  while its BatchNorm still runs in training mode (§3.3, §8.1); the first ``l`` decoder blocks + g2
  (+ the shared Dense-128 region projection with ``--wgt_en 1``) trained with L^R / L^D. The L^R
  batch is 10 pairs whatever ``--bt_size`` says (the release ignored it, bug 9.2.6); L^D uses the
  hard-coded 3 volumes x 4 partitions.

Both write the full UNet (``W/final/model.weights.h5``, untrained parts at their random init) so
that the fine-tuning stage loads it with ``models.io.load_unet`` and copies what it needs.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import tensorflow as tf

from data import augment as A
from data import pipeline, store
from data.errors import InputError
from losses.global_contrastive import global_contrastive_loss
from losses.local_contrastive import local_contrastive_loss
from models.heads import build_g1, build_g2
from models.io import load_unet
from models.transfer import transfer_weights
from models.unet import DECODER_BLOCK_CHANNELS, DECODER_BLOCK_OUTPUTS, ENCODER_OUTPUT, build_unet, endpoints_model
from training import checkpoint as ck
from training import common
from training import loop as loop_lib
from training import steps

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


def _pool_key(conf: common.StageConfig, cfg: Any) -> tuple[str, str]:
    if conf.get("no_of_tr_imgs"):
        return (conf.no_of_tr_imgs, conf.comb_tr_imgs)
    return tuple(cfg.unlabeled_pool)


def run_pretrain(conf: common.StageConfig) -> dict[str, Any]:
    """Run (or resume) ``--stage global`` or ``--stage local``; returns the summary."""
    import configs

    t_start = time.time()
    conf = common.resolve_dataset(conf)
    cfg = configs.get_config(conf.dataset, conf.data_dir)
    key = _pool_key(conf, cfg)
    stage = conf.stage
    if stage == "global" and int(conf.global_loss_exp_no) not in (0, 1, 2):
        raise InputError(f"--global_loss_exp_no must be 0 (G^R), 1 (G^D-) or 2 (G^D), got {conf.global_loss_exp_no}")
    if stage == "local":
        if not 1 <= int(conf.no_of_decoder_blocks) <= 5:
            raise InputError(f"--no_of_decoder_blocks must be in 1..5, got {conf.no_of_decoder_blocks}")
        if int(conf.no_of_local_regions) not in (9, 13):
            raise InputError(f"--no_of_local_regions must be 9 or 13, got {conf.no_of_local_regions}")
    env = common.prepare(conf.replace(pool=list(key)),
                         GLOBAL_SHAPE_KEYS if stage == "global" else LOCAL_SHAPE_KEYS, split_key=key)
    strategy = env.strategy
    volumes = store.load_volumes(conf.data_dir, env.split.labeled)
    images = [v.image for v in volumes]
    hw = tuple(cfg.image_size)

    with strategy.scope():
        unet = build_unet(cfg.num_classes, hw)
        if stage == "global":
            backbone = endpoints_model(unet, ENCODER_OUTPUT)
            head = build_g1(tuple(backbone.output.shape[1:]))
            proj = None
        else:
            block = int(conf.no_of_decoder_blocks)
            backbone = endpoints_model(unet, DECODER_BLOCK_OUTPUTS[block - 1])
            head, proj = build_g2(DECODER_BLOCK_CHANNELS[block - 1], int(conf.wgt_en), int(conf.local_reg_size))
        if env.replicas > 1:
            for m in (unet, head):
                steps.synchronize_batchnorm(m)
    if stage == "global":
        variables = steps.variables_of([backbone, head])
    else:
        # Encoder excluded from the update; its BN layers still run in training mode.
        variables = steps.variables_of([backbone], exclude_prefixes=("enc_",)) + steps.variables_of(
            [head, proj])
    optimizer = steps.make_optimizer(conf.lr_reg, variables, strategy)
    state = ck.TrainState()
    objects = dict(model=unet, head=head, optimizer=optimizer, state=state)
    if proj is not None:
        objects["projection"] = proj
    checkpointer = ck.Checkpointer(env.out_dir / "ckpt", restore_from=env.workdir / "ckpt", **objects)
    resumed = checkpointer.restore_latest()
    if not resumed and stage == "local":
        if conf.get("init_from"):
            copied = transfer_weights(load_unet(conf.init_from, num_classes=cfg.num_classes), unet, ("enc_",))
            loop_lib.log(f"[local] encoder initialized from {conf.init_from} ({len(copied)} layers)")
        else:
            loop_lib.log("[local] no --init_from: the frozen encoder keeps its random initialization")
    start = int(state.step.numpy())
    base_seed = common.data_seed(conf.seed, start)

    if stage == "global":
        loss = functools.partial(global_contrastive_loss, exp_no=int(conf.global_loss_exp_no),
                                 bt_size=int(conf.bt_size), n_parts=int(conf.n_parts),
                                 temperature=float(conf.temp_fac))
        crop = crop_settings(hw, int(conf.bbox_dim))

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.global_loss_batches(
                images, int(conf.global_loss_exp_no), bt_size=int(conf.bt_size), n_parts=int(conf.n_parts),
                seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id),
                replicate_gd_zero_block=bool(conf.replicate_gd_zero_block), **crop)
        jit_loss = True
    else:
        exp_no = int(conf.local_loss_exp_no)
        loss = functools.partial(
            local_contrastive_loss, exp_no=exp_no, num_regions=int(conf.no_of_local_regions),
            region_size=int(conf.local_reg_size),
            num_negatives=int(conf.no_of_neg_local_regions) if exp_no == 0 else None,
            temperature=float(conf.temp_fac), projection=proj)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.local_loss_batches(images, exp_no, bt_size=LR_PAIRS,
                                               seed=pipeline.replica_seed(base_seed, ctx.input_pipeline_id))
        # The projection's variables cannot sit inside an XLA function under several replicas.
        jit_loss = proj is None or env.replicas == 1

    compute = steps.contrastive_compute(backbone, head, loss, f"{stage}_loss", jit_loss=jit_loss)
    step_fn = steps.make_train_step(strategy, compute, variables, optimizer, jit_compile=env.jit,
                                    state_variables=unet.non_trainable_variables + head.non_trainable_variables)
    batches = common.distribute(strategy, dataset_fn)
    metrics = loop_lib.MetricsLog(env.out_dir / "metrics.json", start)
    total = common.end_step(conf.n_iter, conf.get("max_steps"))
    lcfg = loop_lib.LoopConfig(workdir=str(env.out_dir), end_step=total, val_every=0,
                               ckpt_every=int(conf.ckpt_every), log_every=int(conf.get("log_every", 10)),
                               is_chief=env.is_chief, desc=stage)
    result = loop_lib.run_loop(lcfg, state, step_fn, batches, checkpointer, metrics, writers=env.writers())
    last = metrics.data["train"][-1] if metrics.data["train"] else {}
    loop_lib.log(f"[{stage}] step {result['step']} loss {last.get('loss')}")
    if env.is_chief:
        ck.save_final(unet, env.out_dir)
    summary = {"stage": stage, **result, "final_loss": last.get("loss"), "seconds": time.time() - t_start,
               "replicas": env.replicas}
    common.write_summary(env, summary)
    return summary
