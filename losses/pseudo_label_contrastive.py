"""Pseudo-label based local contrastive loss of Chaitanya et al., MedIA 2023 (ORIGINAL_SPEC §3.4).

Three pieces, in the order the joint training step uses them:

* :func:`assemble_contrastive_batch` (host, NumPy) picks 5 labeled and 5 pseudo-labeled slices that
  contain every class and lays them out as the 10 image pairs of §3.4.2;
  :func:`select_segmentation_slices` picks the 20 slices of the segmentation batch (§3.4.2 step 7).
* :func:`sample_anchors` (host, NumPy) draws P anchor pixels per foreground class and image
  (``calc_pos_neg_index`` of §3.4.3) and returns a validity mask instead of the sentinel 1000.
* :func:`pseudo_label_local_contrastive_loss` (graph, TF) is the loss of §3.4.4, vectorized over
  pairs x classes x samples, compilable with ``tf.function(jit_compile=True)``.

Notation: 2B images, rows ``[0, B)`` are the first images of the pairs and rows ``[B, 2B)`` the
second images (pair k = rows k and B + k); C classes with background 0; F = {1..C-1}; P anchors per
class and image; ``s(u, v) = cos(u, v) / tau``; E = embedding channels.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np
import tensorflow as tf

from data.errors import InputError
from losses.reduction import check_reduction

# The pairing table of §3.4.2 for ``local_loss_exp_no=1`` (inter). The 10 selected slices are
# indexed ``[L0..L4, U0..U4]`` = 0..9; pair k = (slice FIRST[k], slice SECOND[k]).
INTER_PAIRS_FIRST = (0, 1, 2, 3, 4, 5, 5, 7, 7, 8)  # L0 L1 L2 L3 L4 U0 U0 U2 U2 U3
INTER_PAIRS_SECOND = (0, 6, 2, 8, 9, 5, 6, 7, 8, 9)  # L0 U1 L2 U3 U4 U0 U1 U2 U3 U4
CONTRASTIVE_BT_SIZE = 10  # the only --bt_size the table supports (ORIGINAL_SPEC §9.3.4)

# Finite stand-in for -inf in the masked log-sum-exp: exp(_MASKED - max) underflows to exactly 0,
# while every value and gradient stays finite even when a whole row is masked.
_MASKED_LOGIT = -1e9


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
    protos = tf.math.l2_normalize(protos, axis=-1)  # (2B, C-1, E)
    # Prototypes of the other image of each pair: row n <-> row (n + B) mod 2B.
    partner_protos = tf.roll(protos, shift=num_pairs, axis=0)  # (2B, C-1, E)
    partner_present = tf.roll(present, shift=num_pairs, axis=0)  # (2B, C-1)

    # Anchor embeddings; invalid anchors read pixel (0, 0) so that no gather goes out of range.
    safe_yx = tf.where(anchor_valid[..., None], anchor_yx, tf.zeros_like(anchor_yx))  # (2B, C-1, P, 2)
    anchors = tf.gather_nd(embeddings, safe_yx, batch_dims=1)  # (2B, C-1, P, E)
    anchors = tf.math.l2_normalize(anchors, axis=-1)  # (2B, C-1, P, E)

    inv_tau = tf.cast(1.0 / temperature, dtype)
    sim_own = tf.einsum("ncpe,nke->ncpk", anchors, protos) * inv_tau  # (2B, C-1, P, C-1)
    pos_own = tf.einsum("ncpe,nce->ncp", anchors, protos) * inv_tau  # (2B, C-1, P): s(z_u, mu_c^own)
    den_logits = sim_own  # (2B, C-1, P, K) with K = C-1 (intra) or 2(C-1) (inter)
    den_mask = present[:, None, None, :]  # (2B, 1, 1, K)
    if inter_image:
        sim_cross = tf.einsum("ncpe,nke->ncpk", anchors, partner_protos) * inv_tau  # (2B, C-1, P, C-1)
        pos_cross = tf.einsum("ncpe,nce->ncp", anchors, partner_protos) * inv_tau  # (2B, C-1, P)
        den_logits = tf.concat([sim_own, sim_cross], axis=-1)  # (2B, C-1, P, 2(C-1))
        den_mask = tf.concat([present, partner_present], axis=-1)[:, None, None, :]  # (2B, 1, 1, 2(C-1))
    den_mask = tf.broadcast_to(den_mask, tf.shape(den_logits))  # (2B, C-1, P, K)
    masked = tf.where(den_mask, den_logits, tf.constant(_MASKED_LOGIT, dtype))  # (2B, C-1, P, K)
    log_den = tf.reduce_logsumexp(masked, axis=-1)  # (2B, C-1, P)

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


def sample_anchors(
    labels: np.ndarray, num_classes: int, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw anchor pixels per foreground class (``calc_pos_neg_index`` of ORIGINAL_SPEC §3.4.3).

    For pair k (rows k and B + k) and class c in 1..C-1, the slot is valid only if c is present in
    both images; then P pixels are drawn uniformly with replacement among the class-c pixels of
    image k and, independently, of image B + k. Invalid slots hold (0, 0) and ``valid=False``
    instead of the original's sentinel 1000 (whose out-of-range gather only worked on GPU). The
    negatives the original also drew are never used by its loss and are not produced.

    Runs on the host (NumPy, before the batch enters the graph or inside tf.data through
    ``tf.numpy_function``): the per-class pixel lists have data-dependent sizes, the work is a few
    cumulative sums on 2B label maps, and keeping it outside makes the loss a pure, XLA-compilable
    function of fixed-shape tensors.

    Args:
        labels: ``(2B, H, W)`` integer label maps of the contrastive images (GT or pseudo-labels).
        num_classes: C, including background.
        num_samples: P, anchors per class and image (``--no_of_pos_eles``).
        rng: NumPy generator that supplies all randomness.

    Returns:
        ``anchor_yx (2B, C-1, P, 2)`` int32 (row, col) and ``anchor_valid (2B, C-1, P)`` bool.

    Raises:
        InputError: bad shapes, an odd number of images, or non-positive sizes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] % 2:
        raise InputError(f"sample_anchors: labels must be (2B, H, W) with 2B even, got shape {labels.shape}")
    if num_classes < 2 or num_samples < 1:
        raise InputError(
            f"sample_anchors: need num_classes >= 2 and num_samples >= 1, got {num_classes}, {num_samples}"
        )
    n, h, w = labels.shape
    b = n // 2
    flat = labels.reshape(n, h * w)  # (2B, HW)
    fg_classes = np.arange(1, num_classes)  # (C-1,)
    is_c = flat[:, None, :] == fg_classes[None, :, None]  # (2B, C-1, HW)
    cum = np.cumsum(is_c, axis=-1, dtype=np.int64)  # (2B, C-1, HW)
    counts = cum[..., -1]  # (2B, C-1)
    present = counts > 0  # (2B, C-1)
    pair_valid = present[:b] & present[b:]  # (B, C-1)
    valid = np.concatenate([pair_valid, pair_valid], axis=0)  # (2B, C-1)
    # j-th pixel of the class (0-based rank), uniform with replacement.
    rank = rng.integers(0, np.maximum(counts, 1)[..., None], size=(n, num_classes - 1, num_samples))  # (2B, C-1, P)
    # Position of the (rank+1)-th True in each row: search all rows at once in one increasing array
    # by offsetting row r's cumulative counts by r * (HW + 1).
    rows = cum.shape[0] * cum.shape[1]
    offsets = np.arange(rows, dtype=np.int64).reshape(n, num_classes - 1) * (h * w + 1)  # (2B, C-1)
    keys = (cum + offsets[..., None]).reshape(-1)  # (2B*(C-1)*HW,)
    targets = rank + 1 + offsets[..., None]  # (2B, C-1, P)
    pos = np.searchsorted(keys, targets.reshape(-1), side="left").reshape(targets.shape)  # (2B, C-1, P)
    pixel = pos - (np.arange(rows).reshape(n, num_classes - 1, 1) * (h * w))  # (2B, C-1, P)
    anchor_valid = np.broadcast_to(valid[..., None], pixel.shape).copy()  # (2B, C-1, P)
    pixel = np.where(anchor_valid, pixel, 0)
    anchor_yx = np.stack([pixel // w, pixel % w], axis=-1).astype(np.int32)  # (2B, C-1, P, 2)
    return anchor_yx, anchor_valid


def _first_slices(labels: np.ndarray, keep: Callable[[np.ndarray], bool], count: int) -> Optional[np.ndarray]:
    """Indices of the first ``count`` slices whose sorted label values satisfy ``keep``, or None."""
    found = []
    for i in range(labels.shape[0]):  # host scan with early exit, as the original
        if keep(np.unique(labels[i])):
            found.append(i)
            if len(found) == count:
                return np.asarray(found)
    return None


def _first_full_label_slices(labels: np.ndarray, num_classes: int, count: int,
                             min_classes: Optional[int] = None) -> Optional[np.ndarray]:
    """Indices of the first ``count`` slices whose label set is exactly {0..C-1} (``min_classes``
    None or C), or that hold at least ``min_classes`` distinct labels, or None."""
    if min_classes is None or int(min_classes) >= num_classes:
        wanted = np.arange(num_classes)
        return _first_slices(labels, lambda values: np.array_equal(values, wanted), count)
    return _first_slices(labels, lambda values: values.size >= int(min_classes), count)


def assemble_contrastive_batch(
    labeled_imgs: np.ndarray,
    labeled_lbls: np.ndarray,
    unlabeled_imgs: np.ndarray,
    unlabeled_lbls: np.ndarray,
    num_classes: int,
    rng: Optional[np.random.Generator] = None,
    inter_image: bool = True,
    bt_size: int = CONTRASTIVE_BT_SIZE,
    min_classes: Optional[int] = None,
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Select and pair the contrastive images of one iteration (ORIGINAL_SPEC §3.4.2 steps 2-3).

    From candidate slices drawn by the caller (300 labeled with GT, 300 unlabeled with pseudo-labels,
    step 1), keep in order the first ``bt_size // 2`` = 5 of each whose label set is exactly
    {0, .., C-1} (for C = 2: background and the structure; ``min_classes`` < C relaxes the rule to
    slices with at least that many distinct labels, for datasets whose classes rarely share a
    slice; the loss masks the classes a pair lacks). Inter (``local_loss_exp_no=1``) lays out the hard-coded table

        pair k   :  0  1  2  3  4  5  6  7  8  9
        image 1  : L0 L1 L2 L3 L4 U0 U0 U2 U2 U3
        image 2  : L0 U1 L2 U3 U4 U0 U1 U2 U3 U4

    and intra (``local_loss_exp_no=0``) pairs each selected slice ``[L0..L4, U0..U4]`` with itself.
    Images come back unaugmented: the caller applies the intensity augmentation separately to the
    two halves (step 4), which is what makes the same-slice pairs differ.

    Runs on the host (NumPy): a data-dependent scan with early exit over candidate slices.

    Args:
        labeled_imgs: ``(N_l, H, W)`` candidate labeled slices.
        labeled_lbls: ``(N_l, H, W)`` their integer labels.
        unlabeled_imgs: ``(N_u, H, W)`` candidate unlabeled slices.
        unlabeled_lbls: ``(N_u, H, W)`` their integer pseudo-labels.
        num_classes: C, including background.
        rng: unused (the selection is deterministic given the candidates); accepted so that every
            host sampler of the joint step has the same signature.
        inter_image: True for the inter table, False for the intra layout.
        bt_size: number of pairs; only 10 is supported (the table is hard-coded, §9.3.4).
        min_classes: None (or C) for the originals' all-classes rule, else the minimum number of
            distinct labels (background counts) of a selected slice, in 2..C.

    Returns:
        ``(images (20, H, W), labels (20, H, W))`` with rows ``[0, 10)`` the first images of the pairs
        and rows ``[10, 20)`` the second images, or None when fewer than 5 slices of either kind
        contain every class (the original skips the iteration).

    Raises:
        InputError: ``bt_size != 10`` or inconsistent shapes.
    """
    del rng
    if bt_size != CONTRASTIVE_BT_SIZE:
        raise InputError(
            f"--bt_size must be {CONTRASTIVE_BT_SIZE} for the pseudo-label contrastive loss: the pairing table of the "
            f"original is defined for 10 pairs only (got {bt_size})"
        )
    labeled_imgs, labeled_lbls = np.asarray(labeled_imgs), np.asarray(labeled_lbls)
    unlabeled_imgs, unlabeled_lbls = np.asarray(unlabeled_imgs), np.asarray(unlabeled_lbls)
    if labeled_imgs.shape != labeled_lbls.shape or unlabeled_imgs.shape != unlabeled_lbls.shape:
        raise InputError(
            f"assemble_contrastive_batch: images and labels differ in shape: {labeled_imgs.shape} vs "
            f"{labeled_lbls.shape}, {unlabeled_imgs.shape} vs {unlabeled_lbls.shape}"
        )
    if min_classes is not None and not 2 <= int(min_classes) <= num_classes:
        raise InputError(f"assemble_contrastive_batch: min_classes must lie in 2..{num_classes}, got {min_classes}")
    half = bt_size // 2
    lab = _first_full_label_slices(labeled_lbls, num_classes, half, min_classes)
    unl = _first_full_label_slices(unlabeled_lbls, num_classes, half, min_classes)
    if lab is None or unl is None:
        return None
    sel_imgs = np.concatenate([labeled_imgs[lab], unlabeled_imgs[unl]], axis=0)  # (10, H, W)
    sel_lbls = np.concatenate([labeled_lbls[lab], unlabeled_lbls[unl]], axis=0)  # (10, H, W)
    if inter_image:
        order = np.asarray(INTER_PAIRS_FIRST + INTER_PAIRS_SECOND)  # (20,)
    else:
        order = np.concatenate([np.arange(bt_size), np.arange(bt_size)])  # (20,)
    return sel_imgs[order], sel_lbls[order]


def select_segmentation_slices(labels: np.ndarray, min_classes: int, batch_size: int = 20) -> Optional[np.ndarray]:
    """Indices of the segmentation batch of the joint step (ORIGINAL_SPEC §3.4.2 step 7).

    Scans the labeled candidate slices from the start (so the batch may overlap the contrastive
    slices, as in the original) and keeps the first ``batch_size`` with at least ``min_classes``
    distinct label values (``DatasetConfig.min_seg_classes``). Runs on the host.

    Args:
        labels: ``(N, H, W)`` integer labels of the labeled candidate slices.
        min_classes: minimum number of distinct labels (background counts).
        batch_size: slices to select (``mtask_bs`` = 20).

    Returns:
        ``(batch_size,)`` int indices into ``labels``, or None when fewer qualify (iteration skipped).
    """
    return _first_slices(np.asarray(labels), lambda values: values.size >= min_classes, batch_size)
