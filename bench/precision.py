"""Step time per ``--precision`` (the precision section of ``python -m bench.training``).

For each precision the real training steps (``training.engine.steps``: the baseline step on 20
images and the PLC joint step on 40 images, UNet built under the precision's Keras policy, loss
scaling for float16) are built once, traced, then timed interleaved (fp32, bf16, fp16, fp32, ...) so
that load on a shared machine affects all alike; the medians and the speed-up over fp32 are
reported. A 3x3 convolution forward+backward per compute dtype (20 x 64 x 64 x 16 -> 16) shows
the kernel-level cause of the differences.

On a CPU, ``mixed_float16`` training steps are skipped unless asked for (``--fp16_on_cpu``):
TensorFlow 2.21 has no fast CPU kernel for float16 convolution gradients (the convolution line
of the output measures it), so one 192x192 step would take many minutes.
"""
from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from bench.timing import median_time
from models.precision import precision_policy, uses_loss_scaling

CONV_SHAPE = (20, 64, 64, 16)  # (N, H, W, C) of the convolution micro-benchmark, 16 -> 16 channels
COMPUTE_DTYPES = {"fp32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}
FP16_CPU_NOTE = ("skipped on CPU: TensorFlow's float16 convolution gradients have no fast CPU kernel "
                 "(see conv3x3_fwd_bwd_s); --fp16_on_cpu times it anyway")


def conv_fwd_bwd_seconds(dtype: tf.DType, repeats: int = 1) -> float:
    """Median seconds of one 3x3 SAME convolution forward + backward (input and filter gradients)
    on :data:`CONV_SHAPE` in ``dtype`` (after one traced warm-up call)."""
    rng = np.random.default_rng(0)
    x = tf.cast(rng.random(CONV_SHAPE), dtype)  # (N, H, W, 16)
    w = tf.cast(rng.normal(0, 0.1, (3, 3, CONV_SHAPE[-1], CONV_SHAPE[-1])), dtype)  # (3, 3, 16, 16)

    @tf.function
    def fwd_bwd(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, w, 1, "SAME"), tf.float32))
        return tape.gradient(loss, [x, w])

    return median_time(lambda: fwd_bwd(x, w), repeats, warmup=1)


def precision_steps(size: int, precision: str, jit: bool, num_classes: int,
                    unit: dict[str, tf.Tensor]) -> dict[str, Callable[[], Any]]:
    """``{"baseline": fn, "joint": fn}``: one training step each (no argument, returns the loss) of
    a UNet + h built under ``precision``, on fixed inputs (20 labeled images; the joint ``unit``)."""
    from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
    from losses.segmentation import segmentation_loss
    from models.heads import build_h
    from models.unet import build_unet
    from training.engine import steps

    strategy = tf.distribute.get_strategy()
    with precision_policy(precision):
        unet, h = build_unet(num_classes, (size, size)), build_h()
    scaled = uses_loss_scaling(precision)
    seg = functools.partial(segmentation_loss, dsc_loss=2)
    base_vars = unet.trainable_variables
    joint_vars = unet.trainable_variables + h.trainable_variables
    base = steps.make_train_step(
        strategy, steps.seg_compute(unet, seg), base_vars,
        steps.make_optimizer(1e-3, base_vars, strategy, loss_scale=scaled), jit_compile=jit,
        state_variables=unet.non_trainable_variables)
    joint = steps.make_train_step(
        strategy, steps.joint_compute(steps.joint_model(unet), h, seg, pseudo_label_local_contrastive_loss, 0.1),
        joint_vars, steps.make_optimizer(1e-3, joint_vars, strategy, loss_scale=scaled), jit_compile=jit,
        state_variables=unet.non_trainable_variables + h.non_trainable_variables)
    labeled = (unit["x_lab"], unit["y_lab"])
    return {"baseline": lambda: base(labeled)[0], "joint": lambda: joint(unit)[0]}


def bench_precision(size: int, repeats: int, jit: bool, precisions: Sequence[str], unit: dict[str, tf.Tensor],
                    num_classes: int, on_gpu: bool, fp16_on_cpu: bool = False) -> dict[str, Any]:
    """Baseline (20 images) and joint (40 images) step times per precision at ``size``.

    Args:
        size: image size (192 = the originals').
        repeats: timed steps per precision and step kind (medians reported).
        jit: XLA for the whole step.
        precisions: ``--precision`` values to time.
        unit: a joint unit (``x_lab`` 20 images, ``x_con`` 20 images, labels and anchors).
        num_classes: classes C of the UNet.
        on_gpu: whether a GPU runs the steps (float16 is timed there).
        fp16_on_cpu: time float16 on a CPU too.

    Returns:
        ``{precision: {"baseline_step_s", "baseline_images_per_s", "joint_step_s",
        "joint_images_per_s", "baseline_speedup_vs_fp32", "joint_speedup_vs_fp32"} or {"skipped"}}``.
    """
    n_lab = int(unit["x_lab"].shape[0])
    n_joint = n_lab + int(unit["x_con"].shape[0])
    out: dict[str, Any] = {}
    runs: dict[str, dict[str, Callable[[], Any]]] = {}
    for precision in precisions:
        if precision == "mixed_float16" and not on_gpu and not fp16_on_cpu:
            out[precision] = {"skipped": FP16_CPU_NOTE}
            continue
        runs[precision] = precision_steps(size, precision, jit, num_classes, unit)
        for fn in runs[precision].values():  # trace + one warm step each
            float(fn()), float(fn())
    times: dict[str, dict[str, list[float]]] = {p: {"baseline": [], "joint": []} for p in runs}
    for _ in range(repeats):
        for precision, fns in runs.items():
            for kind, fn in fns.items():
                t0 = time.perf_counter()
                float(fn())
                times[precision][kind].append(time.perf_counter() - t0)
    for precision, kinds in times.items():
        base, joint = statistics.median(kinds["baseline"]), statistics.median(kinds["joint"])
        out[precision] = {"baseline_step_s": base, "baseline_images_per_s": n_lab / base,
                          "joint_step_s": joint, "joint_images_per_s": n_joint / joint}
    if "fp32" in times:
        for precision in times:
            for kind in ("baseline", "joint"):
                out[precision][f"{kind}_speedup_vs_fp32"] = (out["fp32"][f"{kind}_step_s"]
                                                             / out[precision][f"{kind}_step_s"])
    return {p: out[p] for p in precisions}


def bench_conv(precisions: Sequence[str], repeats: int = 1) -> dict[str, float]:
    """``{precision: seconds}`` of :func:`conv_fwd_bwd_seconds` in each precision's compute dtype."""
    return {p: conv_fwd_bwd_seconds(COMPUTE_DTYPES[p], repeats) for p in precisions}
