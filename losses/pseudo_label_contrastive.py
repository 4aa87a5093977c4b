"""Pseudo-label based local contrastive loss of Chaitanya et al., MedIA 2023 (ORIGINAL_SPEC §3.4).

:func:`pseudo_label_local_contrastive_loss` (graph, TF) is the loss of §3.4.4, vectorized over
pairs x classes x samples, compilable with ``tf.function(jit_compile=True)``. Its inputs (the 10
image pairs, the anchors and their validity mask) are selected on the host by
:mod:`data.plc_selection`.

Notation: 2B images, rows ``[0, B)`` are the first images of the pairs and rows ``[B, 2B)`` the
second images (pair k = rows k and B + k); C classes with background 0; F = {1..C-1}; P anchors per
class and image; ``s(u, v) = cos(u, v) / tau``; E = embedding channels.

The terms are the masked InfoNCE of :mod:`losses.info_nce`, but written as log-sum-exp over a
masked denominator minus the positive logit (:func:`losses.info_nce.masked_logsumexp`) rather than
through :func:`losses.info_nce.info_nce`: here the denominator is the set of present prototypes,
which already holds the positive's own prototype (a softmax over prototypes, not "positive plus
negatives"), and the inter-image variant shares one denominator between an anchor's own- and
cross-image positives, so it is computed once.
"""
from __future__ import annotations

import tensorflow as tf

from common.errors import InputError
from losses.info_nce import masked_logsumexp, similarity_logits, unit_vectors
from losses.reduction import check_reduction


def pseudo_label_local_contrastive_loss(
    embeddings: tf.Tensor,
    labels: tf.Tensor,
    anchor_yx: tf.Tensor,
    anchor_valid: tf.Tensor,
    temperature: float = 0.1,
    inter_image: bool = True,
    stop_gradient_prototypes: bool = False,
    replicate_original_weighting: bool = False,
    reduction: str = "mean",
) -> tf.Tensor:
    r"""Pseudo-label local contrastive loss (MedIA 2023, ORIGINAL_SPEC §3.4.4).

    For pair k with images a = k and b = B + k, each foreground class c in F has a prototype
    ``mu_c^a`` = mean embedding of the pixels labelled c in image a (same for b). For each anchor
    pixel u of class c in a (and v in b) the terms are

        l(u, mu) = -log( exp(s(z_u, mu)) / sum_{m in M_u} exp(s(z_u, m)) )

    with ``l(u, mu_c^a)`` and ``l(v, mu_c^b)`` (intra and inter), plus ``l(u, mu_c^b)`` and
    ``l(v, mu_c^a)`` (inter only). The denominator set M_u holds the foreground prototypes that exist
    in the anchor's image (intra) or in both images of the pair (inter); the positive's own prototype
    is included (a softmax over prototypes); background is never an anchor or a prototype.
    With ``S_k`` the sum of all terms of pair k and ``D = P(C-1)`` (intra) or ``2P(C-1)`` (inter):

        default:      L = (1 / (B D)) sum_k S_k                       (the intended mean, §9.3.1)
        replicate:    acc = 0; for k: acc = (acc + S_k) / D;  L = acc / B
                      i.e. L = sum_k S_k / (B D^(B-k))                (the released code)

    Validity replaces the original's guards: a term exists iff its anchor is valid and the class of
    its positive prototype is present in the prototype's image; denominators run over the prototypes
    that exist. Invalid or absent entries contribute 0 terms (also to D, which stays the nominal
    count, as in the original). Intentional differences from the original's zero/NaN guards:
    an exactly-zero similarity (e.g. orthogonal vectors) is a legitimate value here, not a sentinel,
    and an all-zero anchor embedding or prototype is used as is (cosine similarity 0 through the
    ``l2_normalize`` epsilon) rather than dropped; in the original these sentinels only stood for
    out-of-range gathers and missing classes, which the masks express exactly. Prototypes are
    label-weighted means, ``sum_p y_c(p) z_p / sum_p y_c(p)``, equal to the original's masked mean
    for hard one-hot labels; soft labels weight pixels (the original took the plain mean over every
    pixel with a non-zero label).

    Pure function of tensors: no Python loops in the traced graph, finite values and gradients for
    any masking (all anchors invalid -> 0), compiles with ``jit_compile=True``.

    Args:
        embeddings: ``(2B, H, W, E)`` float, output of the h head for the contrastive images.
        labels: ``(2B, H, W, C)`` one-hot (GT or pseudo-label) of the same images; soft values
            accepted (cast to the embeddings' dtype).
        anchor_yx: ``(2B, C-1, P, 2)`` int32 (row, col) of anchor pixels per foreground class
            (slot c-1 for class c), from :func:`sample_anchors`.
        anchor_valid: ``(2B, C-1, P)`` bool, False where no anchor was drawn.
        temperature: tau of ``s(u, v) = cos(u, v) / tau``.
        inter_image: True for ``local_loss_exp_no=1`` (inter), False for 0 (intra).
        stop_gradient_prototypes: treat the class prototypes as constants (``--ver 1``; the
            original file is missing, this is an interpretation, §9.3.3).
        replicate_original_weighting: reproduce the released per-pair weighting 1/(B D^(B-k))
            (§9.3.1). Only supported with ``reduction="mean"``.
        reduction: ``"mean"`` -> scalar; ``"none"`` -> ``(B,)`` per-pair values ``S_k / D`` whose
            plain mean equals the scalar.

    Returns:
        Scalar loss, or ``(B,)`` per-pair losses for ``reduction="none"``; dtype of ``embeddings``
        (float32 for half-precision embeddings, which are upcast).

    Raises:
        InputError: inconsistent static shapes, unknown ``reduction``, or
            ``replicate_original_weighting`` with ``reduction="none"``.
    """
    check_reduction(reduction)
    if replicate_original_weighting and reduction != "mean":
        raise InputError("replicate_original_weighting only supports reduction='mean'")
    embeddings = tf.convert_to_tensor(embeddings)
    if embeddings.dtype in (tf.float16, tf.bfloat16):
        embeddings = tf.cast(embeddings, tf.float32)  # exp/log-sum-exp and the mask constant need float32
    dtype = embeddings.dtype
    labels = tf.cast(labels, dtype)
    anchor_yx = tf.cast(anchor_yx, tf.int32)
    anchor_valid = tf.cast(anchor_valid, tf.bool)
    _check_static_shapes(embeddings, labels, anchor_yx, anchor_valid)

    num_fg = tf.shape(anchor_yx)[1]  # C - 1
    num_samples = tf.shape(anchor_yx)[2]  # P
    num_pairs = tf.shape(embeddings)[0] // 2  # B

    # Class prototypes: label-weighted mean embedding per image and foreground class.
    fg = labels[..., 1:]  # (2B, H, W, C-1)
    sums = tf.einsum("nhwe,nhwc->nce", embeddings, fg)  # (2B, C-1, E)
    counts = tf.reduce_sum(fg, axis=[1, 2])  # (2B, C-1)
    present = counts > 0  # (2B, C-1)
    safe_counts = tf.where(present, counts, tf.ones_like(counts))  # (2B, C-1)
    protos = sums / safe_counts[..., None]  # (2B, C-1, E); zero where absent
    if stop_gradient_prototypes:
        protos = tf.stop_gradient(protos)
    protos = unit_vectors(protos)  # (2B, C-1, E)
    # Prototypes of the other image of each pair: row n <-> row (n + B) mod 2B.
    partner_protos = tf.roll(protos, shift=num_pairs, axis=0)  # (2B, C-1, E)
    partner_present = tf.roll(present, shift=num_pairs, axis=0)  # (2B, C-1)

    # Anchor embeddings; invalid anchors read pixel (0, 0) so that no gather goes out of range.
    safe_yx = tf.where(anchor_valid[..., None], anchor_yx, tf.zeros_like(anchor_yx))  # (2B, C-1, P, 2)
    anchors = tf.gather_nd(embeddings, safe_yx, batch_dims=1)  # (2B, C-1, P, E)
    anchors = unit_vectors(anchors)  # (2B, C-1, P, E)

    sim_own = similarity_logits("ncpe,nke->ncpk", anchors, protos, temperature)  # (2B, C-1, P, C-1)
    pos_own = similarity_logits("ncpe,nce->ncp", anchors, protos, temperature)  # (2B, C-1, P): s(z_u, mu_c^own)
    den_logits = sim_own  # (2B, C-1, P, K) with K = C-1 (intra) or 2(C-1) (inter)
    den_mask = present[:, None, None, :]  # (2B, 1, 1, K)
    if inter_image:
        sim_cross = similarity_logits("ncpe,nke->ncpk", anchors, partner_protos, temperature)  # (2B, C-1, P, C-1)
        pos_cross = similarity_logits("ncpe,nce->ncp", anchors, partner_protos, temperature)  # (2B, C-1, P)
        den_logits = tf.concat([sim_own, sim_cross], axis=-1)  # (2B, C-1, P, 2(C-1))
        den_mask = tf.concat([present, partner_present], axis=-1)[:, None, None, :]  # (2B, 1, 1, 2(C-1))
    # One denominator per anchor, shared by its own- and cross-image terms; a row with no prototype
    # present is finite and its terms are discarded below.
    log_den = masked_logsumexp(den_logits, den_mask)  # (2B, C-1, P)

    zero = tf.zeros_like(log_den)  # (2B, C-1, P)
    valid_own = tf.logical_and(anchor_valid, present[:, :, None])  # (2B, C-1, P)
    terms = tf.where(valid_own, log_den - pos_own, zero)  # (2B, C-1, P)
    if inter_image:
        valid_cross = tf.logical_and(anchor_valid, partner_present[:, :, None])  # (2B, C-1, P)
        terms = terms + tf.where(valid_cross, log_den - pos_cross, zero)  # (2B, C-1, P)

    per_image = tf.reduce_sum(terms, axis=[1, 2])  # (2B,)
    pair_sums = per_image[:num_pairs] + per_image[num_pairs:]  # (B,) = S_k
    norm_d = tf.cast(num_samples * num_fg * (2 if inter_image else 1), dtype)  # D = P(C-1) or 2P(C-1)
    if replicate_original_weighting:
        # acc = (acc + S_k) / D for k = 0..B-1, then / B  <=>  weight of pair k is D^-(B-k) / B.
        k = tf.cast(tf.range(num_pairs), dtype)  # (B,)
        weights = tf.pow(norm_d, k - tf.cast(num_pairs, dtype))  # (B,)
        return tf.reduce_sum(weights * pair_sums) / tf.cast(num_pairs, dtype)
    per_pair = pair_sums / norm_d  # (B,)
    if reduction == "none":
        return per_pair
    return tf.reduce_mean(per_pair)


def _check_static_shapes(embeddings, labels, anchor_yx, anchor_valid) -> None:
    """Raise InputError when the statically known shapes of the loss inputs disagree."""
    e, y, a, v = embeddings.shape, labels.shape, anchor_yx.shape, anchor_valid.shape
    if e.rank != 4 or y.rank != 4 or a.rank != 4 or v.rank != 3:
        raise InputError(
            f"expected embeddings (2B,H,W,E), labels (2B,H,W,C), anchor_yx (2B,C-1,P,2), anchor_valid (2B,C-1,P);"
            f" got ranks {e.rank}, {y.rank}, {a.rank}, {v.rank}"
        )

    def clash(x, z):
        return x is not None and z is not None and x != z

    n = e[0]
    if n is not None and n % 2:
        raise InputError(f"embeddings must hold 2B images (pairs), got {n}")
    if any(clash(n, s[0]) for s in (y, a, v)) or clash(e[1], y[1]) or clash(e[2], y[2]):
        raise InputError(f"batch/spatial shapes disagree: embeddings {e}, labels {y}, anchors {a}, valid {v}")
    if clash(a[3], 2) or clash(a[1], v[1]) or clash(a[2], v[2]) or (y[3] is not None and clash(a[1], y[3] - 1)):
        raise InputError(f"anchor shapes must be (2B, C-1, P, 2) and (2B, C-1, P): got {a} and {v} for C={y[3]}")
