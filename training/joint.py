"""PLC joint training (ORIGINAL_SPEC §3.4, §4.3 step 3): rounds of joint Dice + pseudo-label local
contrastive training, pseudo-labels re-estimated between rounds.

* Initialization (round 0): encoder and decoder from the baseline (``--init_from``; trainable
  weights only, BN statistics fresh, §9.3.9), segmentation head and h head freshly initialized,
  fresh Adam.
* Each iteration: one 40-image forward (``training.steps.joint_compute``) on a unit from
  ``training.joint_data``; skipped units count as iterations.
* Validation every ``val_every`` iterations of the round; a better Dice writes ``W/best`` and the
  full training state to ``W/best_state`` (weights, heads, Adam, counters).
* Round end (not after the last round): the most recently saved best state is restored (as the
  release's ``get_max_chkpt_file``), the running best is reset to the last validation Dice
  (release behaviour, 9.3.6; ``--plc_global_best`` keeps the global best instead), and the
  pseudo-labels of the next round are predicted by that model with the same code as
  ``--stage pseudolabel`` (``W/pseudo_labels/round_<r>``).
* Round 0 pseudo-labels: ``--pseudo_label_dir`` (output of ``--stage pseudolabel``) or, if not
  given, generated from the ``--init_from`` model into ``W/pseudo_labels/round_0``.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any

import tensorflow as tf

from data import store
from data.errors import InputError
from losses.pseudo_label_contrastive import CONTRASTIVE_BT_SIZE, pseudo_label_local_contrastive_loss
from losses.segmentation import segmentation_loss
from models.heads import build_h
from models.io import load_unet
from models.transfer import transfer_weights
from models.unet import build_unet
from training import checkpoint as ck
from training import common
from training import joint_data
from training import loop as loop_lib
from training import steps
from training import strategy as strat
from training.pseudolabel_stage import load_kept, make_pseudo_labels, round_dir

SHAPE_KEYS = ("bt_size", "no_of_pos_eles", "local_loss_exp_no", "n_iter_per_round", "rounds", "batch_size")


def check_conf(conf: common.StageConfig) -> None:
    """Flag checks of the joint stage (one-line InputErrors)."""
    if int(conf.bt_size) != CONTRASTIVE_BT_SIZE:
        raise InputError(f"--bt_size must be {CONTRASTIVE_BT_SIZE} for --stage joint: the pairing table of "
                         f"the original is defined for 10 pairs only (got {conf.bt_size})")
    if int(conf.local_loss_exp_no) not in (0, 1):
        raise InputError(f"--local_loss_exp_no must be 0 or 1, got {conf.local_loss_exp_no}")
    if int(conf.rounds) < 1 or int(conf.n_iter_per_round) < 1:
        raise InputError("--rounds and --n_iter_per_round must be >= 1")
    if int(conf.no_of_pos_eles) < 1:
        raise InputError(f"--no_of_pos_eles must be >= 1, got {conf.no_of_pos_eles}")
    if not conf.get("init_from"):
        raise InputError("--init_from is required for --stage joint (the baseline workdir)")


def plc_loss_fn(conf: common.StageConfig):
    """The pseudo-label contrastive loss with the stage's settings, ``(..., reduction) -> loss``."""
    return functools.partial(
        pseudo_label_local_contrastive_loss, temperature=float(conf.temp_fac),
        inter_image=int(conf.local_loss_exp_no) == 1, stop_gradient_prototypes=int(conf.ver) == 1,
        replicate_original_weighting=bool(conf.replicate_plc_loss_weighting))


def _plc_per_unit(conf: common.StageConfig):
    """Per-pair PLC loss for the step builder; with the release's weighting (a scalar over the 10
    pairs of one unit) the scalar is returned as the unit's single value."""
    base = plc_loss_fn(conf)
    if bool(conf.replicate_plc_loss_weighting):
        def fn(emb, y, yx, valid, reduction="none"):
            return tf.reshape(base(emb, y, yx, valid, reduction="mean"), [1])  # (1,)
        return fn
    return base


def run_joint(conf: common.StageConfig) -> dict[str, Any]:
    """Run (or resume) PLC joint training; returns the summary."""
    t_start = time.time()
    conf = common.resolve_dataset(conf)
    check_conf(conf)
    env = common.prepare(conf, SHAPE_KEYS)
    cfg, strategy = env.cfg, env.strategy
    labeled = common.load_labeled(conf.data_dir, env.split.labeled, "labeled")
    unlabeled = store.load_volumes(conf.data_dir, env.split.unlabeled)

    with strategy.scope():
        unet = build_unet(cfg.num_classes, tuple(cfg.image_size))
        h_head = build_h()
        if env.replicas > 1:
            steps.synchronize_batchnorm(unet)
            steps.synchronize_batchnorm(h_head)
        two_out = steps.joint_model(unet)
    variables = unet.trainable_variables + h_head.trainable_variables
    optimizer = steps.make_optimizer(conf.lr_seg, variables, strategy)
    state = ck.TrainState()
    objects = dict(model=unet, h=h_head, optimizer=optimizer, state=state)
    checkpointer = ck.Checkpointer(env.out_dir / "ckpt", restore_from=env.workdir / "ckpt", **objects)
    best_state = ck.Checkpointer(env.out_dir / "best_state", max_to_keep=1,
                                restore_from=env.workdir / "best_state", **objects)
    resumed = checkpointer.restore_latest()
    baseline = None
    if not resumed:
        baseline = load_unet(conf.init_from, num_classes=cfg.num_classes)
        copied = transfer_weights(baseline, unet, ("enc_", "dec_"))
        loop_lib.log(f"[joint] initialized {len(copied)} encoder/decoder layers from {conf.init_from}")
    else:
        loop_lib.log(f"[joint] resuming from step {int(state.step.numpy())}")

    seg_loss = functools.partial(segmentation_loss, dsc_loss=int(conf.dsc_loss),
                                 class_weights=cfg.class_weights)
    compute = steps.joint_compute(two_out, h_head, seg_loss, _plc_per_unit(conf), float(conf.lamda_local),
                                  jit_loss=env.jit and env.replicas > 1)
    step_fn = steps.make_train_step(strategy, compute, variables, optimizer, jit_compile=env.jit,
                                    state_variables=unet.non_trainable_variables + h_head.non_trainable_variables)
    validator = common.Validator(conf.data_dir, env.split.val, cfg, unet)
    metrics = loop_lib.MetricsLog(env.out_dir / "metrics.json", int(state.step.numpy()))
    writers = env.writers()
    n_per, rounds = int(conf.n_iter_per_round), int(conf.rounds)
    total = common.end_step(rounds * n_per, conf.get("max_steps"))
    lab_images = [v.image for v in labeled]
    lab_labels = [v.label for v in labeled]
    round_info = []

    def save_best(step: int, dice: float) -> None:
        ck.save_best(unet, env.out_dir, step, dice)
        best_state.save(step)

    for r in range(rounds):
        r_start, r_end = r * n_per, min((r + 1) * n_per, total)
        if r_start >= total:
            break
        pl_dir = round_dir(env.out_dir, r)
        if r == 0 and conf.get("pseudo_label_dir"):
            pl_dir = conf.pseudo_label_dir
        elif not (pl_dir / "manifest.json").exists():
            source = unet
            if r == 0:
                source = baseline if baseline is not None else load_unet(conf.init_from, num_classes=cfg.num_classes)
            t0 = time.time()
            make_pseudo_labels(source, conf, cfg, unlabeled, pl_dir)
            loop_lib.log(f"[joint] round {r}: pseudo-labels in {pl_dir} ({time.time() - t0:.0f}s)")
        unl_images, unl_labels, manifest = load_kept(pl_dir, unlabeled)
        round_info.append({"round": r, "pseudo_labels": str(pl_dir), "kept": len(manifest["kept"]),
                           "rejected": len(manifest.get("rejected", []))})

        start = int(state.step.numpy())
        if start < r_end:
            seed0 = common.data_seed(conf.seed, start)

            def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
                sampler = joint_data.JointSampler(
                    lab_images, lab_labels, unl_images, unl_labels, cfg.num_classes, cfg.min_seg_classes,
                    seg_batch=int(conf.batch_size), bt_size=int(conf.bt_size),
                    num_pos=int(conf.no_of_pos_eles), inter_image=int(conf.local_loss_exp_no) == 1,
                    seed=seed0 + 7 * int(ctx.input_pipeline_id))
                return joint_data.joint_dataset(
                    sampler, augment=bool(conf.data_aug), deform=bool(conf.rd_en),
                    intensity=bool(conf.ri_en), sigma=float(conf.sigma))

            batches = common.distribute(strategy, dataset_fn)
            lcfg = loop_lib.LoopConfig(workdir=str(env.out_dir), end_step=r_end, val_every=int(conf.val_every),
                                       ckpt_every=int(conf.ckpt_every), is_chief=env.is_chief,
                                       desc=f"joint r{r}", val_origin=r_start,
                                       save_at_end=not (r_end == (r + 1) * n_per and r < rounds - 1))
            loop_lib.run_loop(lcfg, state, step_fn, batches, checkpointer, metrics, validate_fn=validator,
                              save_best_fn=save_best,
                              skip_fn=lambda b: joint_data.is_skipped(b, strategy), writers=writers)

        # A round is over only when all its iterations ran (not when --max_steps stopped inside
        # or at the end of it: a later run without the cap must still do the round end).
        round_complete = int(state.step.numpy()) >= (r + 1) * n_per
        if round_complete and int(state.rounds_done.numpy()) <= r and r < rounds - 1:
            # Round end: continue from the most recently saved best state (release behaviour).
            keep = {k: int(getattr(state, k).numpy()) for k in ("skipped", "nonfinite")}
            last_val = float(state.last_val.numpy())
            strat.barrier(strategy)  # multi-worker: the chief's best state is complete on disk
            restored = best_state.restore_latest()
            loop_lib.log(f"[joint] round {r} done: continuing from "
                         f"{best_state.latest if restored else 'the last weights (no best state saved)'}")
            for k, v in keep.items():
                getattr(state, k).assign(v)
            state.step.assign((r + 1) * n_per)
            state.last_val.assign(last_val)
            if not bool(conf.plc_global_best) and math.isfinite(last_val):
                state.best.assign(last_val)
            state.rounds_done.assign(r + 1)
            checkpointer.save((r + 1) * n_per)
        elif round_complete and int(state.rounds_done.numpy()) <= r:
            state.rounds_done.assign(r + 1)

    if env.is_chief:
        ck.save_final(unet, env.out_dir)
    # W/best holds the most recently saved best (the running best is reset at each round end), so
    # report what W/best holds rather than the running value.
    best = ck.read_best(env.out_dir) if env.is_chief else None
    summary = {"stage": "joint", "step": int(state.step.numpy()), "skipped": int(state.skipped.numpy()),
               "nonfinite": int(state.nonfinite.numpy()),
               "best_val_dice": float(best["val_dice"]) if best else float(state.best.numpy()),
               "best_step": int(best["step"]) if best else None,
               "last_val_dice": float(state.last_val.numpy()), "rounds": round_info,
               "seconds": time.time() - t_start, "replicas": env.replicas}
    common.write_summary(env, summary)
    return summary
