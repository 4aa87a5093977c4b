"""Where the baseline training step spends its time (the ``breakdown`` section of ``bench.training``).

Six ``tf.function`` variants of the baseline step are run on one fixed batch, each a superset of the
previous one, so that differences of their median times attribute the step's cost:

* ``a_forward``: ``model(x, training=True)``, the logits pulled to the host;
* ``b_forward_loss``: + the Dice loss (``segmentation_loss(dsc_loss=2)``);
* ``c_forward_loss_grad``: + the gradients (``GradientTape``), each gradient reduced and pulled;
* ``d_hand_step``: + ``Adam.apply_gradients``: a plain hand-written step without any guard;
* ``e_full_step``: the project's step (``training.engine.steps.make_train_step`` with
  ``seg_compute``): NaN guard with the BN moving statistics copied before the step and restored by
  ``tf.where``, the all-reduce of the finite flags, Adam under a ``tf.cond``, ``strategy.run``;
* ``f_full_step_no_bn_guard``: ``e`` with ``state_variables=None`` (no BN-statistics copies).

The variants are timed interleaved: ``n`` rounds, each calling every variant once (the starting
variant rotates from round to round), and the median per variant is reported, so a drift of the
machine load hits all of them alike (the fastest round of each is reported beside it, as a gauge of
the noise). Derived fractions of the full step ``e``: forward ``a/e``, loss
``(b-a)/e``, backward ``(c-b)/e``, optimizer ``(d-c)/e``, guard + distribution overhead ``(e-d)/e``
and BN-guard copies ``(e-f)/e``. A fraction may come out slightly negative when two variants differ
by less than the timing noise.

The thread pools in effect are reported too (they cannot be changed once TensorFlow has started).
"""
from __future__ import annotations

import functools
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from losses.segmentation import segmentation_loss
from models.unet import build_unet
from training.engine import steps

C = 4
VARIANTS = ("a_forward", "b_forward_loss", "c_forward_loss_grad", "d_hand_step", "e_full_step",
            "f_full_step_no_bn_guard")
FRACTIONS = ("forward_share", "loss_share", "backward_share", "optimizer_share",
             "guard_distribution_overhead", "bn_guard_copies")


def thread_settings() -> dict[str, Any]:
    """The TensorFlow thread pools in effect (0 = TensorFlow chooses) and the CPUs of this process."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "os_cpu_count": os.cpu_count(), "cpus_available": affinity,
            "env": {k: os.environ[k] for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                               "OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS")
                    if k in os.environ}}


def interleaved_times(fns: dict[str, Callable[[], Any]], n: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each function in ``n`` round-robin rounds, after ``warmup`` untimed rounds.

    Round ``r`` calls the functions in their order rotated by ``r``; outputs are pulled to the host
    (``np.asarray`` on every tensor) inside the timed region.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            tf.nest.map_structure(np.asarray, fns[name]())
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            tf.nest.map_structure(np.asarray, fns[name]())
            times[name].append(time.perf_counter() - t0)
    return times


def fractions(t: dict[str, float]) -> dict[str, float]:
    """Shares of the full step ``e_full_step`` from the variant times ``t`` (see module docstring)."""
    e = t["e_full_step"]
    return {"forward_share": t["a_forward"] / e,
            "loss_share": (t["b_forward_loss"] - t["a_forward"]) / e,
            "backward_share": (t["c_forward_loss_grad"] - t["b_forward_loss"]) / e,
            "optimizer_share": (t["d_hand_step"] - t["c_forward_loss_grad"]) / e,
            "guard_distribution_overhead": (e - t["d_hand_step"]) / e,
            "bn_guard_copies": (e - t["f_full_step_no_bn_guard"]) / e}


def breakdown(size: int, n: int, images: int = 20, jit_compile: bool = False) -> dict[str, Any]:
    """Time the six step variants on a UNet at ``size`` x ``size`` and attribute the step's cost.

    Args:
        size: image side (a multiple of 32).
        n: timed rounds (each variant is timed ``n`` times, interleaved).
        images: images in the fixed batch.
        jit_compile: compile every variant with XLA (as ``--jit_compile`` does for the real step).

    Returns:
        ``{"size", "images", "rounds", "jit_compile", "seconds": {variant: median s},
        "seconds_min": {variant: fastest round} (a spread far from the median marks a noisy run),
        "fractions": {name: share of e from the medians}, "threads": thread_settings()}``.
    """
    strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    unet = build_unet(C, (size, size))
    seg = functools.partial(segmentation_loss, dsc_loss=2)
    variables = unet.trainable_variables
    x = tf.constant(rng.random((images, size, size, 1)), tf.float32)  # (B, H, W, 1)
    y = tf.one_hot(rng.integers(0, C, (images, size, size)), C)  # (B, H, W, C)
    jit = bool(jit_compile) or None

    @tf.function(jit_compile=jit)
    def forward():
        return unet(x, training=True)  # (B, H, W, C)

    @tf.function(jit_compile=jit)
    def forward_loss():
        return seg(unet(x, training=True), y)  # ()

    def loss_and_grads():
        with tf.GradientTape() as tape:
            loss = seg(unet(x, training=True), y)  # ()
        return loss, tape.gradient(loss, variables)

    @tf.function(jit_compile=jit)
    def forward_loss_grad():
        loss, grads = loss_and_grads()
        return loss, [tf.reduce_sum(g) for g in grads]

    hand_opt = steps.make_optimizer(1e-3, variables, strategy)

    @tf.function(jit_compile=jit)
    def hand_step():
        loss, grads = loss_and_grads()
        hand_opt.apply_gradients(zip(grads, variables))
        return loss

    def project_step(state_variables: list[tf.Variable] | None) -> Callable:
        return steps.make_train_step(strategy, steps.seg_compute(unet, seg), variables,
                                     steps.make_optimizer(1e-3, variables, strategy),
                                     jit_compile=bool(jit_compile), state_variables=state_variables)

    full, no_guard = project_step(unet.non_trainable_variables), project_step(None)
    fns = dict(zip(VARIANTS, (forward, forward_loss, forward_loss_grad, hand_step,
                              lambda: full((x, y))[0], lambda: no_guard((x, y))[0])))
    times = interleaved_times(fns, n)
    seconds = {name: statistics.median(ts) for name, ts in times.items()}
    return {"size": size, "images": images, "rounds": n, "jit_compile": bool(jit_compile),
            "seconds": seconds, "seconds_min": {name: min(ts) for name, ts in times.items()},
            "fractions": fractions(seconds), "threads": thread_settings()}
