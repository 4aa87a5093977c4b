"""Segmentation losses of the originals (ORIGINAL_SPEC §3.1), selected by ``--dsc_loss``.

With ``p = softmax(logits)`` and (one-hot or soft) labels ``y`` of shape ``(N, H, W, C)``:

    dice[n, c] = 2 * sum_hw(p * y) / (sum_hw p + sum_hw y + 1e-10)

- ``dsc_loss=2`` (default): ``1 - mean_{n, c} dice[n, c]`` (background included);
- ``dsc_loss=1``: ``1 - mean_{n, c >= 1} dice[n, c]``;
- ``dsc_loss=0``: weighted cross-entropy ``mean_{n,h,w}( w * CE(p, y) )`` with the per-pixel weight
  ``w = sum_c cw_c * y_c``.

Every function returns the scalar loss, or with ``reduction="none"`` one value per image whose plain
mean is that scalar.
"""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from losses.reduction import reduce_per_unit

DICE_EPSILON = 1e-10
# Class weights of the originals' weighted cross-entropy, by number of classes.
DEFAULT_CLASS_WEIGHTS = {
    2: (0.1, 0.9),
    3: (0.1, 0.45, 0.45),
    4: (0.1, 0.3, 0.3, 0.3),
    8: (0.09,) + (0.13,) * 7,
}


def soft_dice_per_class(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Soft (differentiable) Dice per image and class, on softmax probabilities: the training Dice.

    The hard Dice of label maps used for evaluation is :func:`evaluation.metrics.dice_per_class`.

    Args:
        logits: ``(N, H, W, C)`` network outputs before softmax.
        labels: ``(N, H, W, C)`` one-hot or soft labels.

    Returns:
        ``(N, C)`` Dice scores.
    """
    labels = tf.cast(labels, logits.dtype)
    prob = tf.nn.softmax(logits, axis=-1)  # (N, H, W, C)
    inter = tf.reduce_sum(prob * labels, axis=[1, 2])  # (N, C)
    denom = tf.reduce_sum(prob, axis=[1, 2]) + tf.reduce_sum(labels, axis=[1, 2]) + DICE_EPSILON  # (N, C)
    return 2.0 * inter / denom


def dice_loss(logits: tf.Tensor, labels: tf.Tensor, include_background: bool = True,
              reduction: str = "mean") -> tf.Tensor:
    """``1 - mean_{n,c} dice[n,c]`` over all classes (``dsc_loss=2``) or classes ``c >= 1`` (``dsc_loss=1``).

    Args:
        logits: ``(N, H, W, C)``.
        labels: ``(N, H, W, C)`` one-hot or soft labels.
        include_background: include class 0.
        reduction: ``"mean"`` (scalar) or ``"none"`` (``(N,)`` per-image ``1 - mean_c dice``).
    """
    dice = soft_dice_per_class(logits, labels)  # (N, C)
    if not include_background:
        dice = dice[:, 1:]  # (N, C-1)
    return reduce_per_unit(1.0 - tf.reduce_mean(dice, axis=1), reduction)


def weighted_cross_entropy(logits: tf.Tensor, labels: tf.Tensor, class_weights: Sequence[float],
                           reduction: str = "mean") -> tf.Tensor:
    """``mean_{n,h,w}( (sum_c cw_c y_c) * (-sum_c y_c log softmax(logits)_c) )`` (``dsc_loss=0``).

    Args:
        logits: ``(N, H, W, C)``.
        labels: ``(N, H, W, C)`` one-hot or soft labels.
        class_weights: ``C`` weights ``cw_c``.
        reduction: ``"mean"`` or ``"none"`` (``(N,)`` per-image means over pixels).
    """
    labels = tf.cast(labels, logits.dtype)
    cw = tf.convert_to_tensor(class_weights, dtype=logits.dtype)  # (C,)
    weights = tf.reduce_sum(labels * cw, axis=-1)  # (N, H, W)
    ce = -tf.reduce_sum(labels * tf.nn.log_softmax(logits, axis=-1), axis=-1)  # (N, H, W)
    return reduce_per_unit(tf.reduce_mean(weights * ce, axis=[1, 2]), reduction)


def segmentation_loss(logits: tf.Tensor, labels: tf.Tensor, dsc_loss: int = 2,
                      class_weights: Sequence[float] | None = None, reduction: str = "mean") -> tf.Tensor:
    """The loss ``--dsc_loss`` selects: 0 weighted CE, 1 Dice without background, 2 Dice with background.

    Args:
        logits: ``(N, H, W, C)``.
        labels: ``(N, H, W, C)`` one-hot or soft labels.
        dsc_loss: 0, 1 or 2.
        class_weights: for ``dsc_loss=0``; defaults to the originals' weights for C in {2, 3, 4, 8}.
        reduction: ``"mean"`` or ``"none"`` (per image).
    """
    if dsc_loss == 2:
        return dice_loss(logits, labels, include_background=True, reduction=reduction)
    if dsc_loss == 1:
        return dice_loss(logits, labels, include_background=False, reduction=reduction)
    if dsc_loss == 0:
        if class_weights is None:
            num_classes = int(logits.shape[-1])
            if num_classes not in DEFAULT_CLASS_WEIGHTS:
                raise ValueError(f"no default class weights for {num_classes} classes; pass class_weights")
            class_weights = DEFAULT_CLASS_WEIGHTS[num_classes]
        return weighted_cross_entropy(logits, labels, class_weights, reduction=reduction)
    raise ValueError(f"dsc_loss must be 0, 1 or 2, got {dsc_loss!r}")
