"""The generic training loop of every stage.

One iteration = fetch a batch, run the step (or count a skip), update counters; around it:

* periodic validation (``val_every``, plus the last iteration) with the best-by-validation weights
  written to ``W/best`` when the Dice improves by more than 1e-7 (as the originals);
* resumable checkpoints in ``W/ckpt`` (``ckpt_every`` and at the end);
* TensorBoard scalars in ``W/train`` and ``W/eval`` plus a few image / GT / prediction overlays;
* ``W/metrics.json`` = ``{"train": [{"step": s, name: value}], "val": [{"step": s, "val_dice": d}]}``;
* a NaN guard: a step whose loss or gradients are non-finite does not update anything and is
  counted; ``max_nonfinite`` consecutive ones stop the run with :class:`TrainingDiverged`, leaving
  the last good checkpoint in place;
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
    val_every: int = 50
    ckpt_every: int = 100
    log_every: int = 10
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
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log(msg: str) -> None:
    """One progress line on stdout (flushed, so it shows under ``make``/pipes)."""
    print(msg, flush=True)


def overlay_images(images: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                   num_classes: int) -> np.ndarray:
    """``(N,H,W)`` image, GT, prediction -> ``(N, H, 3W, 3)`` uint8 panels [image | GT | pred].

    Labels are drawn with a fixed colour per class over the grey image.
    """
    colours = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.float32)
    img = images.astype(np.float32)
    lo, hi = np.percentile(img, 1), np.percentile(img, 99)
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)[..., None] * 255.0  # (N, H, W, 1)
    grey = np.repeat(grey, 3, axis=-1)  # (N, H, W, 3)

    def paint(lab):
        col = colours[np.clip(lab, 0, len(colours) - 1) % len(colours)]  # (N, H, W, 3)
        mask = (lab > 0)[..., None]
        return np.where(mask, 0.5 * grey + 0.5 * col, grey)

    panel = np.concatenate([grey, paint(labels), paint(preds)], axis=2)  # (N, H, 3W, 3)
    return panel.astype(np.uint8)


def run_loop(cfg: LoopConfig, state: TrainState, step_fn: Callable[[Any], tuple],
             batches: Iterator[Any], checkpointer: Checkpointer, metrics: MetricsLog,
             validate_fn: Callable[[int], dict] | None = None,
             save_best_fn: Callable[[int, float], None] | None = None,
             skip_fn: Callable[[Any], bool] | None = None,
             writers: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Run iterations until ``state.step == cfg.end_step``.

    Args:
        cfg: schedule.
        state: step / running best / counters (saved in the checkpoint).
        step_fn: ``batch -> (loss, metrics dict, applied)`` from ``training.engine.steps.make_train_step``.
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
        Summary dict: ``{"step", "skipped", "nonfinite", "last_val_dice", "best_val_dice"}``.

    Raises:
        TrainingDiverged: ``cfg.max_nonfinite`` consecutive non-finite steps.
    """
    start = int(state.step.numpy())
    progress = Progress(start, cfg.end_step, cfg.desc)
    consecutive_bad = 0
    last_val = None
    n_val = 0
    t0 = time.time()
    train_w, eval_w = writers if writers is not None else (None, None)
    recent: dict[str, list[float]] = {}
    try:
        while int(state.step.numpy()) < cfg.end_step:
            i = int(state.step.numpy())  # 0-based index of this iteration
            batch = next(batches)
            values: dict[str, float] = {}
            if skip_fn is not None and skip_fn(batch):
                state.skipped.assign_add(1)
            else:
                loss, mets, applied = step_fn(batch)
                values = {"loss": float(loss), **{k: float(v) for k, v in mets.items()}}
                if not bool(applied):
                    state.nonfinite.assign_add(1)
                    consecutive_bad += 1
                    if consecutive_bad >= cfg.max_nonfinite:
                        raise TrainingDiverged(
                            f"{consecutive_bad} consecutive non-finite losses at step {i + 1}; "
                            f"stopped. The last good checkpoint is kept in {checkpointer.directory} "
                            f"(lower the learning rate or check the input data)")
                else:
                    consecutive_bad = 0
                    for k, v in values.items():
                        recent.setdefault(k, []).append(v)
            state.step.assign_add(1)
            step = i + 1
            progress.update(values)

            if cfg.is_chief and recent and (step % cfg.log_every == 0 or step == cfg.end_step):
                means = {k: float(np.mean(v)) for k, v in recent.items()}
                recent = {}
                metrics.add("train", step, means)
                if train_w is not None:
                    with train_w.as_default():
                        for k, v in means.items():
                            summaries.scalar(k, v, step)
                        summaries.scalar("skipped_iterations", int(state.skipped.numpy()), step)

            is_last = step == cfg.end_step
            if validate_fn is not None and ((cfg.val_every and (i - cfg.val_origin) % cfg.val_every == 0) or is_last):
                res = validate_fn(step)
                last_val = float(res["val_dice"])
                state.last_val.assign(last_val)
                n_val += 1
                if cfg.is_chief:
                    scalars = {k: v for k, v in res.items() if k != "images"}
                    metrics.add("val", step, scalars)
                    if eval_w is not None:
                        with eval_w.as_default():
                            for k, v in scalars.items():
                                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                                    summaries.scalar(k, float(v), step)
                            if res.get("images") is not None and (n_val - 1) % cfg.image_every_val == 0:
                                summaries.images("image_gt_pred", res["images"], step)
                if math.isfinite(last_val) and last_val - float(state.best.numpy()) > cfg.min_improvement:
                    state.best.assign(last_val)
                    if save_best_fn is not None:
                        # Every worker calls it (checkpoint saves are collective under
                        # MultiWorkerMirroredStrategy); non-chief workers write to a temp dir.
                        save_best_fn(step, last_val)
                log(f"[{cfg.desc}] step {step}/{cfg.end_step} val_dice {last_val:.4f} "
                    f"best {float(state.best.numpy()):.4f} skipped {int(state.skipped.numpy())} "
                    f"({time.time() - t0:.0f}s)")
                if cfg.is_chief:
                    metrics.write()

            if (step % cfg.ckpt_every == 0 or is_last) and (cfg.save_at_end or not is_last):
                checkpointer.save(step)
                if cfg.is_chief:
                    metrics.write()
    finally:
        progress.close()
        for w in (train_w, eval_w):
            if w is not None:
                w.flush()
    return {"step": int(state.step.numpy()), "skipped": int(state.skipped.numpy()),
            "nonfinite": int(state.nonfinite.numpy()),
            # A rerun of a finished stage validates nothing: report the checkpointed last value.
            "last_val_dice": last_val if last_val is not None else float(state.last_val.numpy()),
            "best_val_dice": float(state.best.numpy())}
