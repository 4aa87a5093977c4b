"""The masked InfoNCE core shared by the three contrastive losses (global, local, pseudo-label local).

Every contrastive term of the project has the form

    l(a, p, M) = -log( exp(s(z_a, z_p)) / sum_{m in M} exp(s(z_a, z_m)) )
               = logsumexp_{m in M} s(z_a, z_m) - s(z_a, z_p)

with the scaled cosine similarity ``s(u, v) = cos(u, v) / tau`` and a denominator set M that holds
the positive p. The global and local losses of Chaitanya et al. 2020 write M as the positive plus
a set of negatives (:func:`info_nce`); the pseudo-label loss of MedIA 2023 writes M as the class
prototypes that exist, the positive's own prototype among them, and shares one denominator between
two positives (:func:`masked_logsumexp`, then subtract each positive logit).

Masked entries are replaced by :data:`MASKED_LOGIT` (-1e9) rather than -inf: ``exp(-1e9 - max)``
underflows to exactly 0 in float32 and float64 (so the value equals the log-sum-exp over the kept
entries), and every value and gradient stays finite even when a whole row is masked (the caller
then discards that term). In float16 the constant rounds to -inf, which is still exact as long as
one entry of the row is kept (always true for :func:`info_nce`, where the positive is).

Everything is plain vectorized TF (einsum, where, reduce_logsumexp) and compiles with XLA.
"""
from __future__ import annotations

import tensorflow as tf

# Epsilon of the L2 normalisation (TF's default): an all-zero vector stays zero, so its cosine
# similarity with anything is 0 and its gradient is finite.
L2_EPSILON = 1e-12
# Finite stand-in for -inf in the masked log-sum-exp (see the module doc).
MASKED_LOGIT = -1e9


def unit_vectors(x: tf.Tensor) -> tf.Tensor:
    """``x / max(||x||, sqrt(1e-12))`` along the last axis: ``(..., D) -> (..., D)``."""
    return tf.math.l2_normalize(x, axis=-1, epsilon=L2_EPSILON)


def similarity_logits(equation: str, a: tf.Tensor, b: tf.Tensor, temperature: float) -> tf.Tensor:
    """Scaled cosine similarities ``s(u, v) = <u, v> / tau`` of unit vectors by an einsum.

    Args:
        equation: einsum contracting the last (vector) axis of ``a`` and ``b``, e.g.
            ``"nd,md->nm"`` (all pairs) or ``"...d,...kd->...k"`` (each anchor with K candidates).
        a: unit vectors ``(..., D)`` (see :func:`unit_vectors`).
        b: unit vectors ``(..., D)``.
        temperature: tau.

    Returns:
        The einsum's output divided by ``temperature``.
    """
    return tf.einsum(equation, a, b) / temperature


def masked_logsumexp(logits: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
    """``log sum_{k: mask_k} exp(logits_k)`` over the last axis: ``(..., K) -> (...)``.

    Args:
        logits: ``(..., K)`` float.
        mask: bool, broadcastable to ``logits``; True keeps an entry. ``None`` keeps all. A row
            with no kept entry gives about ``-1e9 + log K`` (finite), for the caller to discard.

    Returns:
        ``(...)`` log-sum-exp values.
    """
    if mask is not None:
        mask = tf.broadcast_to(mask, tf.shape(logits))  # (..., K)
        logits = tf.where(mask, logits, tf.constant(MASKED_LOGIT, logits.dtype))  # (..., K)
    return tf.reduce_logsumexp(logits, axis=-1)  # (...)


def info_nce(positive: tf.Tensor, negatives: tf.Tensor, negative_mask: tf.Tensor | None = None) -> tf.Tensor:
    """``-log(e^{s_p} / (e^{s_p} + sum_k mask_k e^{s_k}))`` from the positive and negative logits.

    Args:
        positive: ``(...)`` logits ``s(z_a, z_p)`` of the positive pairs.
        negatives: ``(..., K)`` logits ``s(z_a, z_k)`` of the candidate negatives.
        negative_mask: bool, broadcastable to ``negatives``; True marks a negative that enters the
            denominator. ``None`` uses all K.

    Returns:
        ``(...)`` term values (>= 0; 0 when no negative is kept).
    """
    logits = tf.concat([positive[..., None], negatives], axis=-1)  # (..., 1 + K)
    mask = None
    if negative_mask is not None:
        negative_mask = tf.broadcast_to(negative_mask, tf.shape(negatives))  # (..., K)
        mask = tf.concat([tf.ones_like(negative_mask[..., :1]), negative_mask], axis=-1)  # (..., 1 + K)
    return masked_logsumexp(logits, mask) - positive  # (...)
