"""Local contrastive losses of Chaitanya et al. 2020 for decoder pre-training (ORIGINAL_SPEC §3.3).

A *region* of a feature map ``f = g2(d_l(e(x)))`` of size ``(h, w, ch)`` is either one pixel
(``region_size=0``, vector of ``ch``) or a 3x3 patch flattened row-major to ``9*ch`` values
(``region_size=1``, coordinates are the top-left corner), optionally projected by the shared Dense-128
of g2 (``projection``). Region coordinates are fixed: with ``m = h - 4`` (3x3) or ``h - 1`` (1x1) and
``q, h', t = int(m/4), int(m/2), int(3m/4)`` (rows; columns likewise from ``w``), the positive regions
are R0..R8 = (0,0) (0,h') (0,m) (h',0) (h',h') (h',m) (m,0) (m,h') (m,m) and, for 13 regions,
R9..R12 = (q,q) (q,t) (t,q) (t,t); each has 5 fixed negative regions (:data:`NEGATIVE_TABLES`).

With ``s(u, v) = cos(u, v) / tau`` and ``f_a[r]`` region r of image a:

- ``exp_no=0`` L^R: images ``[a_0, b_0, a_1, b_1, ...]`` (two views of each slice, interleaved). For each
  pair, region r with negatives N(r):
  ``l_a = -log(e^{s(f_a[r], f_b[r])} / (e^{s(f_a[r], f_b[r])} + sum_{n in N(r)} e^{s(f_a[r], f_a[n])}
  + e^{s(f_a[r], f_b[n])}))`` and symmetrically ``l_b``. Loss = sum / (R * number of images).
- ``exp_no=1`` L^D: images ``[view1 (A), view2 (A)]`` with A = 12 = 3 volumes x 4 partitions in the
  original. Anchor i < A: partners ``k2 = A + i``, ``k3 = (i + S) % A``, ``k4 = (i + 2S) % A``; for each
  partner ``-log(e^{s(f_i[r], f_k[r])} / (e^{..} + sum_{n} e^{s(f_i[r], f_i[n])} + e^{s(f_i[r], f_k[n])}))``
  (anchor side only). Loss = sum / (R * 2A) (= R * 24 in the original). The scripts use only the
  first 4 negatives of each region here (``no_of_neg_regs_override``), which is the default.

Each term is :func:`losses.info_nce.info_nce` (positive plus all listed negatives, no mask).
Everything is a handful of gathers and einsums over constant index tables: no Python loops over
images or regions in the graph; compiles with XLA.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from common.errors import InputError
from losses.info_nce import info_nce, similarity_logits, unit_vectors
from losses.reduction import check_reduction, reduce_per_unit

# Region coordinates as (row symbol, column symbol); symbols 0, q, h, t, m (see module doc).
POSITIVE_REGIONS = ("00", "0h", "0m", "h0", "hh", "hm", "m0", "mh", "mm", "qq", "qt", "tq", "tt")
NEGATIVE_TABLES = {
    # (number of regions, region_size): 5 negatives per positive region, in the originals' order.
    (9, 0): ("0h h0 hh 0m m0", "00 0m h0 hh hm", "00 0h hh hm mm", "00 0h hh m0 mh", "00 0h h0 hm mh",
             "0h 0m hh mh mm", "00 h0 hh mh mm", "h0 hh hm m0 mm", "0m hh hm m0 mh"),
    (13, 1): ("0h qq qh h0 hq", "00 0m qq qt hh", "0h qh qt ht hm", "00 qq hh m0 tq", "qq qt tq tt h0",
              "0m hh mm qt tt", "h0 hq mh tq th", "hh m0 mm tq tt", "ht hm mh tt th", "00 0h h0 hh qt",
              "0h 0m qq hh hm", "h0 hh m0 mh tt", "hh hm mh mm tq"),
    (13, 0): ("0h h0 hh qq qt", "00 0m hh qq qt", "0h hh hm tq qt", "00 hh m0 qq tq", "qq qt tq tt h0",
              "0m hh mm qt tt", "h0 hh mh tq qq", "hh m0 mm tq tt", "hh hm mh tt tq", "00 0h h0 hh qt",
              "0h 0m hh hm tt", "h0 hh m0 0h qq", "hh hm mh mm qt"),
}
NEGATIVE_TABLES[(9, 1)] = NEGATIVE_TABLES[(9, 0)]
MAX_NEGATIVES = 5


def _symbol_values(size: int, region_size: int) -> dict[str, int]:
    m = size - (4 if region_size == 1 else 1)
    return {"0": 0, "q": int(m / 4), "h": int(m / 2), "t": int(3 * m / 4), "m": m}


def region_tables(height: int, width: int, num_regions: int, region_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left coordinates of the positive and negative regions.

    Args:
        height, width: feature map size.
        num_regions: 9 or 13 (``--no_of_local_regions``).
        region_size: 0 for 1x1, 1 for 3x3 (``--local_reg_size``).

    Returns:
        ``(pos (R, 2), neg (R, 5, 2))`` int32 ``(row, col)`` coordinates.
    """
    if (num_regions, region_size) not in NEGATIVE_TABLES:
        raise InputError(f"--no_of_local_regions must be 9 or 13 and --local_reg_size 0 or 1, "
                         f"got {num_regions} and {region_size}")
    min_size = 4 if region_size == 1 else 1
    if height < min_size or width < min_size:
        raise InputError(f"feature map {height}x{width} is too small for the local regions")
    rows, cols = _symbol_values(height, region_size), _symbol_values(width, region_size)

    def coords(code: str) -> tuple[int, int]:
        return rows[code[0]], cols[code[1]]

    pos = np.array([coords(c) for c in POSITIVE_REGIONS[:num_regions]], np.int32)  # (R, 2)
    neg = np.array([[coords(c) for c in row.split()] for row in NEGATIVE_TABLES[(num_regions, region_size)]],
                   np.int32)  # (R, 5, 2)
    return pos, neg


def extract_regions(features: tf.Tensor, coords: np.ndarray, region_size: int) -> tf.Tensor:
    """Region vectors at fixed top-left coordinates.

    Args:
        features: ``(N, h, w, ch)`` with static h, w.
        coords: ``(U, 2)`` int ``(row, col)``.
        region_size: 0 (pixel, vector ``ch``) or 1 (3x3 patch, row-major ``(3, 3, ch)`` -> ``9*ch``).

    Returns:
        ``(N, U, ch)`` or ``(N, U, 9*ch)``.
    """
    _, h, w, ch = features.shape
    k = 3 if region_size == 1 else 1
    dr, dc = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    flat_idx = (coords[:, 0, None] + dr.reshape(1, -1)) * w + coords[:, 1, None] + dc.reshape(1, -1)  # (U, k*k)
    flat = tf.reshape(features, [-1, h * w, ch])  # (N, h*w, ch)
    patches = tf.gather(flat, flat_idx, axis=1)  # (N, U, k*k, ch)
    return tf.reshape(patches, [-1, coords.shape[0], k * k * ch])  # (N, U, k*k*ch)


def _region_terms(anchor: tf.Tensor, positive: tf.Tensor, negatives: tf.Tensor, temperature: float) -> tf.Tensor:
    """InfoNCE terms of unit region vectors (:func:`losses.info_nce.info_nce`, no mask).

    Args:
        anchor: ``(..., D)``; positive: ``(..., D)``; negatives: ``(..., K, D)``.

    Returns:
        ``(...)`` term values.
    """
    s_pos = similarity_logits("...d,...d->...", anchor, positive, temperature)  # (...)
    s_neg = similarity_logits("...d,...kd->...k", anchor, negatives, temperature)  # (..., K)
    return info_nce(s_pos, s_neg)  # (...)


def local_contrastive_loss(features: tf.Tensor, exp_no: int, num_regions: int = 13, region_size: int = 1,
                           num_negatives: int | None = None, temperature: float = 0.1,
                           projection: Callable[[tf.Tensor], tf.Tensor] | None = None, n_parts: int = 4,
                           reduction: str = "mean") -> tf.Tensor:
    """L^R (``exp_no=0``) or L^D (``exp_no=1``) on g2 feature maps laid out as in the module doc.

    Args:
        features: ``(N, h, w, ch)`` g2 outputs (static h, w); N even.
        exp_no: ``--local_loss_exp_no``.
        num_regions: 9 or 13 (``--no_of_local_regions``).
        region_size: ``--local_reg_size``: 0 = single pixels, 1 = 3x3 patches.
        num_negatives: negatives used per region (first k of the table's 5); default 5 for exp 0 and 4
            for exp 1, as the original scripts.
        temperature: tau (``--temp_fac``).
        projection: maps ``(M, d) -> (M, d')`` region vectors (g2's shared Dense-128 when ``wgt_en=1``);
            applied to every region vector before the cosine similarity.
        n_parts: partitions per volume in the L^D layout (4 in the original).
        reduction: ``"mean"`` (scalar) or ``"none"``: per image for exp 0, per anchor for exp 1 (its
            terms / (2R)); the plain mean of these values is the loss.

    Returns:
        Scalar loss (or per-unit values).
    """
    check_reduction(reduction)
    if exp_no not in (0, 1):
        raise InputError(f"--local_loss_exp_no must be 0 or 1, got {exp_no}")
    if num_negatives is None:
        num_negatives = MAX_NEGATIVES if exp_no == 0 else MAX_NEGATIVES - 1
    if not 1 <= int(num_negatives) <= MAX_NEGATIVES:
        raise InputError(f"number of negative local regions must be in 1..{MAX_NEGATIVES}, got {num_negatives}")
    features = tf.convert_to_tensor(features)
    if features.shape.rank != 4 or features.shape[1] is None or features.shape[2] is None:
        raise ValueError(f"features must be (N, h, w, ch) with static h, w; got {features.shape}")
    n = features.shape[0]
    if n is not None and n % 2:
        raise ValueError(f"local loss needs an even number of images, got {n}")
    pos, neg = region_tables(int(features.shape[1]), int(features.shape[2]), num_regions, region_size)
    neg = neg[:, :num_negatives]  # (R, K, 2)
    r = pos.shape[0]
    # Extract each distinct coordinate once; index tables point into the unique list.
    all_coords = np.concatenate([pos, neg.reshape(-1, 2)], axis=0)
    uniq, inverse = np.unique(all_coords, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    pos_u = inverse[:r]  # (R,)
    neg_u = inverse[r:].reshape(r, -1)  # (R, K)

    v = extract_regions(features, uniq, region_size)  # (N, U, d)
    if projection is not None:
        projected = projection(tf.reshape(v, [-1, v.shape[-1]]))  # (N*U, d')
        v = tf.reshape(projected, [-1, uniq.shape[0], projected.shape[-1]])  # (N, U, d')
    v = unit_vectors(v)  # (N, U, d')

    if exp_no == 0:
        first, second = v[0::2], v[1::2]  # (P, U, d) each

        def side(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            anchor = tf.gather(x, pos_u, axis=1)  # (P, R, d)
            positive = tf.gather(y, pos_u, axis=1)  # (P, R, d)
            negatives = tf.concat([tf.gather(x, neg_u, axis=1), tf.gather(y, neg_u, axis=1)], axis=2)  # (P, R, 2K, d)
            return tf.reduce_mean(_region_terms(anchor, positive, negatives, temperature), axis=1)  # (P,)

        per_unit = tf.reshape(tf.stack([side(first, second), side(second, first)], axis=1), [-1])  # (N,)
    else:
        a = tf.shape(v)[0] // 2
        view1, view2 = v[:a], v[a:]  # (A, U, d) each
        idx = tf.range(a)
        partners = tf.stack([view2, tf.gather(view1, (idx + n_parts) % a),
                             tf.gather(view1, (idx + 2 * n_parts) % a)])  # (3, A, U, d)
        anchor = tf.gather(view1, pos_u, axis=1)[None]  # (1, A, R, d)
        own_neg = tf.gather(view1, neg_u, axis=1)[None]  # (1, A, R, K, d)
        positive = tf.gather(partners, pos_u, axis=2)  # (3, A, R, d)
        partner_neg = tf.gather(partners, neg_u, axis=2)  # (3, A, R, K, d)
        own_neg = tf.broadcast_to(own_neg, tf.shape(partner_neg))  # (3, A, R, K, d)
        negatives = tf.concat([own_neg, partner_neg], axis=3)  # (3, A, R, 2K, d)
        anchor = tf.broadcast_to(anchor, tf.shape(positive))  # (3, A, R, d)
        terms = _region_terms(anchor, positive, negatives, temperature)  # (3, A, R)
        per_unit = tf.reduce_sum(terms, axis=[0, 2]) / (2.0 * r)  # (A,)
    return reduce_per_unit(per_unit, reduction)  # (U,) or scalar

