"""The generic training loop of every stage.

One iteration = fetch a batch, run the step (or count a skip), update counters; around it:

* periodic validation (``val_every``, plus the last iteration) with the best-by-validation weights
  written to ``W/best`` when the Dice improves by more than 1e-7 (as the originals);
* resumable checkpoints in ``W/ckpt`` (``ckpt_every`` and at the end);
* TensorBoard scalars in ``W/train`` and ``W/eval`` plus a few image / GT / prediction overlays;
* ``W/metrics.json`` = ``{"train": [{"step": s, name: value}], "val": [{"step": s, "val_dice": d}]}``;
* a NaN guard: a step whose loss or gradients are non-finite does not update anything and is
  counted; ``max_nonfinite`` consecutive ones stop the run with :class:`TrainingDiverged`, leaving
  the last good checkpoint in place; a float16 step skipped by loss scaling (the scale was halved)
  is counted apart (``loss_scale_overflows``) and does not count towards divergence;
* a progress bar when stderr is a terminal, otherwise one log line per validation.

Step numbering: ``step`` counts completed iterations (skipped ones included, like the originals);
the iteration with index ``i`` (0-based) reports ``step = i + 1``. Validation runs after iterations
with ``i % val_every == 0`` (the originals validate at ``i = 0, 50, 100, ...``) and after the last.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf

from training.engine import summaries
from training.engine.checkpoint import Checkpointer, TrainState
from training.engine.steps import STEP_APPLIED, STEP_OVERFLOW
from workdir import MetricsLog


class TrainingDiverged(RuntimeError):
    """Raised after too many consecutive non-finite losses."""


@dataclasses.dataclass
class LoopConfig:
    """Schedule of one training segment.

    Attributes:
        workdir: the stage workdir (chief) or a temp dir (other workers).
        end_step: the loop stops when ``state.step`` reaches this value.
        val_every: validate after iterations with ``i % val_every == 0`` (0 = only at the end).
        ckpt_every: save a resumable checkpoint every this many steps (and at the end).
        log_every: write train scalars every this many steps.
        max_nonfinite: consecutive non-finite steps that stop the run.
        image_every_val: write overlays every this many validations.
        min_improvement: a validation Dice must beat the running best by more than this.
        is_chief: write summaries and metrics only on the chief.
        desc: progress-bar label.
        val_origin: iteration index from which ``val_every`` counts (start of a PLC round).
        save_at_end: save a checkpoint after the last iteration. The PLC joint stage turns it off
            for a round followed by a round end, which saves the restored best state under the
            same number (overwriting a checkpoint in place is not atomic).
    """

    workdir: str
    end_step: int
    val_every: int
    ckpt_every: int
    log_every: int
    max_nonfinite: int = 20
    image_every_val: int = 4
    min_improvement: float = 1e-7
    is_chief: bool = True
    desc: str = "train"
    val_origin: int = 0
    save_at_end: bool = True


class Progress:
    """tqdm bar on a terminal; otherwise silent (the loop logs one line per validation)."""

    def __init__(self, start: int, end: int, desc: str) -> None:
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=end, initial=start, desc=desc, dynamic_ncols=True, leave=False)

    def update(self, postfix: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log(msg: str) -> None:
    """One progress line on stdout (flushed, so it shows under ``make``/pipes)."""
    print(msg, flush=True)


class _StepValues:
    """Per-step results kept as tensors between log points (no host sync per step).

    ``flush`` reads them once: the values of the applied steps, the non-finite count, and the
    step at which ``max_nonfinite`` consecutive non-finite steps were reached (if any).
    """

    def __init__(self, consecutive_bad: int = 0) -> None:
        self.items: list[tuple[int, Any, dict, Any]] = []
        self.consecutive_bad = consecutive_bad

    def add(self, step: int, loss: Any, mets: dict, status: Any) -> None:
        self.items.append((step, loss, mets, status))

    def flush(self, max_nonfinite: int) -> tuple[dict[str, list[float]], int, int, int | None]:
        """``({name: values of the applied steps}, non-finite steps, loss-scale overflow steps, step
        where the run diverged or None)``.

        An overflow step (float16 loss scaling lowered the scale) neither counts towards nor breaks
        a run of consecutive non-finite steps.
        """
        values: dict[str, list[float]] = {}
        bad = overflow = 0
        diverged_at = None
        for step, loss, mets, status in self.items:
            status = int(status)  # a bool from a hand-written step: True = applied
            if status == STEP_OVERFLOW:
                overflow += 1
                continue
            if status != STEP_APPLIED:
                bad += 1
                self.consecutive_bad += 1
                if self.consecutive_bad >= max_nonfinite and diverged_at is None:
                    diverged_at = step
                continue
            self.consecutive_bad = 0
            for k, v in {"loss": loss, **mets}.items():
                values.setdefault(k, []).append(float(v))
        self.items = []
        return values, bad, overflow, diverged_at


def state_summary(state: TrainState, last_val: float | None = None) -> dict[str, Any]:
    """The loop's result dict from the training state (``last_val`` = the last validation run)."""
    return {"step": int(state.step.numpy()), "skipped": int(state.skipped.numpy()),
            "nonfinite": int(state.nonfinite.numpy()), "loss_scale_overflows": int(state.overflow.numpy()),
            # A rerun of a finished stage validates nothing: report the checkpointed last value.
            "last_val_dice": last_val if last_val is not None else float(state.last_val.numpy()),
            "best_val_dice": float(state.best.numpy())}


class _Loop:
    """The parts of :func:`run_loop`: iterate, log, validate-and-keep-best, checkpoint."""

    def __init__(self, cfg: LoopConfig, state: TrainState, checkpointer: Checkpointer, metrics: MetricsLog,
                 validate_fn: Callable[[int], dict] | None, save_best_fn: Callable[[int, float], None] | None,
                 writers: tuple[Any, Any] | None) -> None:
        self.cfg, self.state, self.checkpointer, self.metrics = cfg, state, checkpointer, metrics
        self.validate_fn, self.save_best_fn = validate_fn, save_best_fn
        self.train_w, self.eval_w = writers if writers is not None else (None, None)
        self.pending = _StepValues()
        self.recent: dict[str, list[float]] = {}
        self.last_val: float | None = None
        self.n_val = 0
        self.t0 = time.time()

    def flush(self) -> dict[str, float]:
        """Read the pending step values into ``recent``; returns the last applied step's values.

        Raises:
            TrainingDiverged: ``max_nonfinite`` consecutive non-finite steps.
        """
        values, bad, overflow, diverged_at = self.pending.flush(self.cfg.max_nonfinite)
        if bad:
            self.state.nonfinite.assign_add(bad)
        if overflow:
            self.state.overflow.assign_add(overflow)
        if diverged_at is not None:
            raise TrainingDiverged(
                f"{self.cfg.max_nonfinite} consecutive non-finite losses at step {diverged_at}; "
                f"stopped. The last good checkpoint is kept in {self.checkpointer.directory} "
                f"(lower the learning rate or check the input data)")
        for k, v in values.items():
            self.recent.setdefault(k, []).extend(v)
        return {k: v[-1] for k, v in values.items()}

    def log_train(self, step: int, means: dict[str, float]) -> None:
        self.metrics.add("train", step, means)
        if self.train_w is not None:
            with self.train_w.as_default():
                for k, v in means.items():
                    summaries.scalar(k, v, step)
                summaries.scalar("skipped_iterations", int(self.state.skipped.numpy()), step)

    def validate(self, step: int) -> None:
        """Validate, record, and keep the best weights when the Dice improves."""
        cfg, state = self.cfg, self.state
        res = self.validate_fn(step)
        self.last_val = float(res["val_dice"])
        state.last_val.assign(self.last_val)
        self.n_val += 1
        if cfg.is_chief:
            self._record_validation(step, res)
        if math.isfinite(self.last_val) and self.last_val - float(state.best.numpy()) > cfg.min_improvement:
            state.best.assign(self.last_val)
            if self.save_best_fn is not None:
                # Every worker calls it (checkpoint saves are collective under
                # MultiWorkerMirroredStrategy); non-chief workers write to a temp dir.
                self.save_best_fn(step, self.last_val)
        log(f"[{cfg.desc}] step {step}/{cfg.end_step} val_dice {self.last_val:.4f} "
            f"best {float(state.best.numpy()):.4f} skipped {int(state.skipped.numpy())} "
            f"({time.time() - self.t0:.0f}s)")
        if cfg.is_chief:
            self.metrics.write()

    def _record_validation(self, step: int, res: dict) -> None:
        scalars = {k: v for k, v in res.items() if k != "images"}
        self.metrics.add("val", step, scalars)
        if self.eval_w is None:
            return
        with self.eval_w.as_default():
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    summaries.scalar(k, float(v), step)
            if res.get("images") is not None and (self.n_val - 1) % self.cfg.image_every_val == 0:
                summaries.images("image_gt_pred", res["images"], step)

    def close(self) -> None:
        for w in (self.train_w, self.eval_w):
            if w is not None:
                w.flush()


def run_loop(cfg: LoopConfig, state: TrainState, step_fn: Callable[[Any], tuple],
             batches: Iterator[Any], checkpointer: Checkpointer, metrics: MetricsLog,
             validate_fn: Callable[[int], dict] | None = None,
             save_best_fn: Callable[[int, float], None] | None = None,
             skip_fn: Callable[[Any], bool] | None = None,
             writers: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Run iterations until ``state.step == cfg.end_step``.

    Per-step loss values stay tensors until the next log, validation or checkpoint point, where
    they are read once (the NaN guard's count and the divergence check happen there too).

    Args:
        cfg: schedule.
        state: step / running best / counters (saved in the checkpoint).
        step_fn: ``batch -> (loss, metrics dict, status)`` from ``training.engine.steps.make_train_step``.
        batches: iterator of (distributed) batches.
        checkpointer: resumable checkpoint of every stateful object.
        metrics: the ``metrics.json`` history.
        validate_fn: ``step -> {"val_dice": float, ..., "images": optional (N,H,3W,3) uint8}``.
        save_best_fn: ``(step, val_dice) -> None`` writing ``W/best`` (default: nothing); called on
            every worker, with ``cfg.workdir`` a temporary directory on non-chief workers.
        skip_fn: ``batch -> bool``; True skips the iteration (counted, like the originals when the
            sampler cannot fill a batch).
        writers: ``(train_writer, eval_writer)`` TensorBoard writers (None on non-chief workers).

    Returns:
        Summary dict: ``{"step", "skipped", "nonfinite", "loss_scale_overflows", "last_val_dice",
        "best_val_dice"}``.

    Raises:
        TrainingDiverged: ``cfg.max_nonfinite`` consecutive non-finite steps.
    """
    loop = _Loop(cfg, state, checkpointer, metrics, validate_fn, save_best_fn, writers)
    progress = Progress(int(state.step.numpy()), cfg.end_step, cfg.desc)
    try:
        while int(state.step.numpy()) < cfg.end_step:
            i = int(state.step.numpy())  # 0-based index of this iteration
            step = i + 1
            batch = next(batches)
            if skip_fn is not None and skip_fn(batch):
                state.skipped.assign_add(1)
            else:
                loss, mets, status = step_fn(batch)
                loop.pending.add(step, loss, mets, status)
            state.step.assign_add(1)
            is_last = step == cfg.end_step
            log_now = step % cfg.log_every == 0 or is_last
            validate_now = validate_fn is not None and (
                (cfg.val_every and (i - cfg.val_origin) % cfg.val_every == 0) or is_last)
            ckpt_now = (step % cfg.ckpt_every == 0 or is_last) and (cfg.save_at_end or not is_last)
            if not (log_now or validate_now or ckpt_now):
                progress.update({})
                continue
            progress.update(loop.flush())
            if cfg.is_chief and loop.recent and log_now:
                loop.log_train(step, {k: float(np.mean(v)) for k, v in loop.recent.items()})
                loop.recent = {}
            if validate_now:
                loop.validate(step)
            if ckpt_now:
                checkpointer.save(step)
                if cfg.is_chief:
                    metrics.write()
    finally:
        progress.close()
        loop.close()
    return state_summary(state, loop.last_val)
