"""PLC joint training (ORIGINAL_SPEC §3.4, §4.3 step 3): rounds of joint Dice + pseudo-label local
contrastive training, pseudo-labels re-estimated between rounds.

* Initialization (round 0, the release's and the default): encoder and decoder from the baseline
  (``--init_from``; trainable weights only, BN statistics fresh, §9.3.9), segmentation head and h head
  freshly initialized, fresh Adam. ``--plc_warm_start`` (variant ``plc_plus``) continues the baseline
  instead: the UNet (head and BN moving statistics included) and the Adam moments and step count of its
  variables, all from one checkpoint, the baseline's ``W/best_state`` (the state of its ``W/best`` model;
  :func:`warm_start_checkpoint`, :func:`training.engine.checkpoint.carry_adam_state`), so round 0 starts from the baseline's
  predictions at the baseline's update scale.
* Each iteration: one 40-image forward (``training.engine.steps.joint_compute``) on a unit from
  ``data.joint_sampler``; skipped units count as iterations.
* Validation every ``val_every`` iterations of the round; a better Dice writes ``W/best`` and the
  full training state to ``W/best_state`` (weights, heads, Adam, counters).
* Round end (not after the last round): the most recently saved best state is restored (as the
  release's ``get_max_chkpt_file``), the running best is reset to the last validation Dice
  (release behaviour, 9.3.6; ``--plc_global_best`` keeps the global best instead), and the
  pseudo-labels of the next round are predicted by that model with the same code as
  ``--stage pseudolabel`` (``W/pseudo_labels/round_<r>``).
* ``--plc_round_floor`` (variant ``plc_plus``): at the start of every round the model is validated, that
  Dice becomes the round's running best and the model is saved as its best state, so the round
  end (and, after the last round, ``W/best``) never holds a model validating below the one the
  round started from. The release keeps the round's best even when it is worse than its start. When
  the kept model is a round's start, the log and the summary (``kept_round_start``) say so.
* Round 0 pseudo-labels: ``--pseudo_label_dir`` (output of ``--stage pseudolabel``) or, if not
  given, generated from the ``--init_from`` model into ``W/pseudo_labels/round_0``.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Iterator

import tensorflow as tf

from data import joint_sampler, store
from common.errors import InputError, warn
from data.plc_selection import CONTRASTIVE_BT_SIZE
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
from losses.segmentation import segmentation_loss
from models.heads import build_h
from models.transfer import transfer_weights
from models.unet import build_unet
from training.config import SelfTrainConfig
from training.engine import loop as loop_lib
from training.engine.checkpoint import carry_adam_state
from training.engine import steps
from training.engine import strategy as strat
from training.engine.env import data_seed, load_labeled
from training.engine.runner import BEST_STATE_DIR, Segment, StageRun, Task, labeled_arrays, run_stage
from training.stages.pseudolabel import load_kept, make_pseudo_labels, round_dir
import workdir as wdir

SHAPE_KEYS = ("bt_size", "no_of_pos_eles", "local_loss_exp_no", "n_iter_per_round", "rounds", "batch_size")


def plc_loss_fn(conf: SelfTrainConfig):
    """The pseudo-label contrastive loss with the stage's settings, ``(..., reduction) -> loss``."""
    return functools.partial(
        pseudo_label_local_contrastive_loss, temperature=conf.temp_fac,
        inter_image=conf.local_loss_exp_no == 1, stop_gradient_prototypes=conf.ver == 1,
        replicate_original_weighting=conf.replicate_plc_loss_weighting)


def _plc_per_unit(conf: SelfTrainConfig):
    """Per-pair PLC loss for the step builder; with the release's weighting (a scalar over the 10
    pairs of one unit) the scalar is returned as the unit's single value."""
    base = plc_loss_fn(conf)
    if conf.replicate_plc_loss_weighting:
        def fn(emb, y, yx, valid, reduction="none"):
            if reduction != "none":
                raise ValueError("the per-unit PLC loss only has reduction='none'")
            return tf.reshape(base(emb, y, yx, valid, reduction="mean"), [1])  # (1,)
        return fn
    return base


def warm_start_checkpoint(init_from: str) -> str | None:
    """The checkpoint ``--plc_warm_start`` takes the UNet *and* its Adam state from (one prefix, so
    that weights and moments belong together); None: there is none (weights only, fresh Adam).

    ``init_from`` a stage workdir: its ``best_state/`` (the training state saved with ``best/``);
    a workdir without one (made before stages kept it) uses its last ``ckpt/`` checkpoint, saying
    so. ``init_from`` a checkpoint folder or prefix: that checkpoint. Every fallback prints one line.
    """
    path = Path(init_from)
    if Path(f"{init_from}.index").is_file():
        return str(path)
    if not path.exists():
        return None  # the model loader says what is wrong with it
    if not path.is_dir():
        warn(f"[joint] --plc_warm_start: --init_from={init_from} is a weights file, not a workdir or "
             f"checkpoint: weights from it, Adam state fresh")
        return None
    if (path / "checkpoint").is_file():
        return tf.train.latest_checkpoint(str(path))
    best_state = tf.train.latest_checkpoint(str(path / BEST_STATE_DIR))
    if best_state is not None:
        best = wdir.read_best(path)
        if best is not None and not best_state.endswith(f"-{best['step']}"):
            warn(f"[joint] --plc_warm_start: {best_state} is not the step of {path / wdir.BEST_DIR} "
                 f"(step {best['step']}; its run was interrupted between the two writes): weights and "
                 f"Adam state from {best_state}")
        return best_state
    last = tf.train.latest_checkpoint(str(path / "ckpt"))
    if last is not None:
        warn(f"[joint] --plc_warm_start: {init_from} has no {BEST_STATE_DIR}/ (made before stages kept "
             f"the state of their best model): weights and Adam state from its last checkpoint {last}, "
             f"not from {wdir.BEST_DIR}/")
        return last
    warn(f"[joint] --plc_warm_start: {init_from} has no {BEST_STATE_DIR}/ or ckpt/ checkpoint: weights "
         f"from {wdir.model_source(init_from).path}, Adam state fresh")
    return None


class JointTask(Task):
    """PLC joint training: rounds of Dice + pseudo-label contrastive loss (module docstring)."""

    shape_keys = SHAPE_KEYS

    @classmethod
    def check(cls, conf: SelfTrainConfig) -> None:
        """Flag checks of the joint stage (one-line InputErrors)."""
        if conf.bt_size != CONTRASTIVE_BT_SIZE:
            raise InputError(f"--bt_size must be {CONTRASTIVE_BT_SIZE} for --stage joint: the pairing table of "
                             f"the original is defined for 10 pairs only (got {conf.bt_size})")
        if conf.local_loss_exp_no not in (0, 1):
            raise InputError(f"--local_loss_exp_no must be 0 or 1, got {conf.local_loss_exp_no}")
        if conf.rounds < 1 or conf.n_iter_per_round < 1:
            raise InputError("--rounds and --n_iter_per_round must be >= 1")
        if conf.no_of_pos_eles < 1:
            raise InputError(f"--no_of_pos_eles must be >= 1, got {conf.no_of_pos_eles}")
        if not conf.init_from:
            raise InputError("--init_from is required for --stage joint (the baseline workdir)")

    def build(self) -> dict[str, Any]:
        conf = self.conf
        self.labeled = load_labeled(conf.data_dir, self.env.split.labeled, "labeled")
        self.unlabeled = store.load_volumes(conf.data_dir, self.env.split.unlabeled)
        unet = build_unet(self.cfg.num_classes, tuple(self.cfg.image_size))
        h_head = build_h()
        self.two_out = steps.joint_model(unet)
        self.baseline = None
        self.round_info: list[dict[str, Any]] = []
        return {"model": unet, "h": h_head}

    def trainable_variables(self) -> list:
        return self.unet.trainable_variables + self.models["h"].trainable_variables

    @property
    def learning_rate(self) -> float:
        return self.conf.lr_seg

    def attach(self, objects: dict[str, Any]) -> None:
        super().attach(objects)
        self.adam = objects["optimizer"]

    def initialize(self) -> None:
        if self.conf.plc_warm_start:
            ckpt = warm_start_checkpoint(self.conf.init_from)
            self.baseline = wdir.load_unet(ckpt or self.conf.init_from, num_classes=self.cfg.num_classes)
            copied = transfer_weights(self.baseline, self.unet, ("enc_", "dec_", "seg_"), include_non_trainable=True)
            carried = carry_adam_state(ckpt, self.adam, len(self.unet.trainable_variables)) if ckpt else 0
            what = (f"layers (head and BN statistics included, --plc_warm_start; Adam state of "
                    f"{carried} UNet variables carried over{f' from {ckpt}' if ckpt else ''})")
        else:
            self.baseline = wdir.load_unet(self.conf.init_from, num_classes=self.cfg.num_classes)
            copied = transfer_weights(self.baseline, self.unet, ("enc_", "dec_"))
            what = "encoder/decoder layers"
        loop_lib.log(f"[joint] initialized {len(copied)} {what} from {self.conf.init_from}")

    def compute_fn(self) -> steps.ComputeFn:
        seg_loss = functools.partial(segmentation_loss, dsc_loss=self.conf.dsc_loss,
                                     class_weights=self.cfg.class_weights)
        return steps.joint_compute(self.two_out, self.models["h"], seg_loss, _plc_per_unit(self.conf),
                                   self.conf.lamda_local, jit_loss=self.env.xla.seg_losses)

    def skip_fn(self):
        """True when any replica's unit of this step is invalid (the whole step is then skipped).

        Multi-worker: the flags of the other workers' replicas are gathered too (a collective), so
        every worker skips the same iterations.
        """
        strategy = self.env.strategy

        def skipped(batch: Any) -> bool:
            flags = strategy.experimental_local_results(batch["valid"])
            return strat.any_worker(strategy, not all(bool(f.numpy()) for f in flags))
        return skipped

    def pseudo_labels(self, r: int) -> tuple[list, list]:
        """Images and pseudo-labels of round ``r`` (made now if the round's directory is incomplete)."""
        conf, out_dir = self.conf, self.env.out_dir
        pl_dir = round_dir(out_dir, r)
        if r == 0 and conf.pseudo_label_dir:
            pl_dir = Path(conf.pseudo_label_dir)
        elif not (pl_dir / "manifest.json").exists():
            source = self.unet
            if r == 0:
                source = self.baseline if self.baseline is not None else wdir.load_unet(
                    conf.init_from, num_classes=self.cfg.num_classes)
            t0 = time.time()
            make_pseudo_labels(source, conf, self.cfg, self.unlabeled, pl_dir)
            loop_lib.log(f"[joint] round {r}: pseudo-labels in {pl_dir} ({time.time() - t0:.0f}s)")
        unl_images, unl_labels, manifest = load_kept(pl_dir, self.unlabeled)
        self.round_info.append({"round": r, "pseudo_labels": str(pl_dir), "kept": len(manifest["kept"]),
                                "rejected": len(manifest.get("rejected", []))})
        return unl_images, unl_labels

    def round_dataset_fn(self, unl_images: list, unl_labels: list):
        """``start_step -> dataset_fn`` of one round (the joint sampler over this round's labels)."""
        conf, cfg = self.conf, self.cfg
        lab_images, lab_labels = labeled_arrays(self.labeled)

        def for_start(start_step: int):
            seed0 = data_seed(conf.seed, start_step)

            def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
                sampler = joint_sampler.JointSampler(
                    lab_images, lab_labels, unl_images, unl_labels, cfg.num_classes, cfg.min_seg_classes,
                    seg_batch=conf.batch_size, bt_size=conf.bt_size, num_pos=conf.no_of_pos_eles,
                    inter_image=conf.local_loss_exp_no == 1, seed=seed0 + 7 * int(ctx.input_pipeline_id),
                    min_con_classes=cfg.contrastive_classes, contrastive_background=cfg.contrastive_background)
                return joint_sampler.joint_dataset(sampler, augment=bool(conf.data_aug), deform=bool(conf.rd_en),
                                                   intensity=bool(conf.ri_en), sigma=conf.sigma)
            return dataset_fn
        return for_start

    def segments(self, run: StageRun) -> Iterator[Segment]:
        """One segment per round; the round end continues from the round's best state."""
        conf, state = self.conf, run.state
        n_per, rounds = conf.n_iter_per_round, conf.rounds
        total = conf.joint_end_step
        for r in range(rounds):
            r_start, r_end = r * n_per, min((r + 1) * n_per, total)
            if r_start >= total:
                break
            unl_images, unl_labels = self.pseudo_labels(r)
            if self.conf.plc_round_floor and int(state.step.numpy()) == r_start:
                self.set_round_floor(run, r, r_start)
            yield Segment(end_step=r_end, dataset_fn=self.round_dataset_fn(unl_images, unl_labels),
                          desc=f"joint r{r}", val_origin=r_start,
                          save_at_end=not (r_end == (r + 1) * n_per and r < rounds - 1))
            # A round is over only when all its iterations ran (not when --max_steps stopped inside
            # or at the end of it: a later run without the cap must still do the round end).
            round_complete = int(state.step.numpy()) >= (r + 1) * n_per
            if round_complete and int(state.rounds_done.numpy()) <= r:
                if r < rounds - 1:
                    self.round_end(run, r)
                state.rounds_done.assign(r + 1)

    def set_round_floor(self, run: StageRun, r: int, step: int) -> None:
        """``--plc_round_floor``: validate the round's starting model and make it the round's best."""
        state = run.state
        res = run.validator(step)
        start = float(res["val_dice"])
        if self.env.is_chief:
            run.metrics.add("round_start", step, {"round": r, "val_dice": start})
            run.metrics.write()
        self.round_info[-1]["start_val_dice"] = start
        if not math.isfinite(start):
            warn(f"[joint] round {r}: the validation Dice of its starting model is {start}: this round has "
                 f"no floor (--plc_round_floor); it keeps its best validated model as without the flag")
            return
        if self.conf.plc_global_best and start <= float(state.best.numpy()):
            return  # the global best (saved in an earlier round) already beats the start
        state.best.assign(start)
        self.save_best(step, start)
        loop_lib.log(f"[joint] round {r} starts at val_dice {start:.4f} (its floor, --plc_round_floor)")

    def kept_round_start(self, best_step: int) -> int | None:
        """The round whose starting model ``W/best`` holds (saved there by ``--plc_round_floor``), or None."""
        n_per = self.conf.n_iter_per_round
        if not self.conf.plc_round_floor or best_step % n_per or best_step >= self.conf.joint_end_step:
            return None
        return best_step // n_per

    def round_end(self, run: StageRun, r: int) -> None:
        """Continue from the most recently saved best state (release behaviour, 9.3.6)."""
        state, n_per = run.state, self.conf.n_iter_per_round
        keep = {k: int(getattr(state, k).numpy()) for k in ("skipped", "nonfinite", "overflow")}
        last_val = float(state.last_val.numpy())
        strat.barrier(self.env.strategy)  # multi-worker: the chief's best state is complete on disk
        restored = self.best_state.restore_latest()
        loop_lib.log(f"[joint] round {r} done: continuing from "
                     f"{self.best_state.latest if restored else 'the last weights (no best state saved)'}")
        best = wdir.read_best(self.env.out_dir) if self.env.is_chief else None
        kept = bool(best) and self.kept_round_start(int(best["step"])) == r
        if self.round_info and self.conf.plc_round_floor:
            self.round_info[-1]["kept_start"] = kept
        if kept:
            loop_lib.log(f"[joint] round {r} kept the model it started from: no validation in the round beat "
                         f"its val_dice {float(best['val_dice']):.4f} (--plc_round_floor)")
        for k, v in keep.items():
            getattr(state, k).assign(v)
        state.step.assign((r + 1) * n_per)
        state.last_val.assign(last_val)
        if not self.conf.plc_global_best and math.isfinite(last_val):
            state.best.assign(last_val)
        state.rounds_done.assign(r + 1)
        run.checkpointer.save((r + 1) * n_per)

    def summary(self, run: StageRun) -> dict[str, Any]:
        # W/best holds the most recently saved best (the running best is reset at each round end), so
        # report what W/best holds rather than the running value.
        state = run.state
        best = wdir.read_best(self.env.out_dir) if self.env.is_chief else None
        kept = self.kept_round_start(int(best["step"])) if best else None
        if self.round_info and self.conf.plc_round_floor and kept is not None:
            self.round_info[-1]["kept_start"] = kept == self.round_info[-1]["round"]
        # Every round of this run kept its start and round 0 started from the baseline: W/best is the baseline.
        kept_baseline = (bool(self.conf.plc_warm_start) and len(self.round_info) == self.conf.rounds
                         and all(info.get("kept_start") for info in self.round_info))
        if kept is not None:
            loop_lib.log(f"[joint] the kept model (W/best, step {best['step']}) is the one round {kept} started "
                         f"from: no later validation beat its val_dice {float(best['val_dice']):.4f}")
        return {"step": int(state.step.numpy()), "skipped": int(state.skipped.numpy()),
                "kept_round_start": kept, "kept_baseline": kept_baseline,
                "nonfinite": int(state.nonfinite.numpy()), "loss_scale_overflows": int(state.overflow.numpy()),
                "best_val_dice": float(best["val_dice"]) if best else float(state.best.numpy()),
                "best_step": int(best["step"]) if best else None,
                "last_val_dice": float(state.last_val.numpy()), "rounds": self.round_info}


def run_joint(conf: SelfTrainConfig) -> dict[str, Any]:
    """Run (or resume) PLC joint training; returns the summary."""
    return run_stage(JointTask, conf)
