"""Global contrastive losses of Chaitanya et al. 2020 (ORIGINAL_SPEC §3.2): G^R, G^D- and G^D.

Every term has the form

    l(a, p, N) = -log( exp(s(z_a, z_p)) / (exp(s(z_a, z_p)) + sum_{n in N} exp(s(z_a, z_n))) )

with ``s(u, v) = cos(u, v) / tau`` (vectors L2-normalised with TF's epsilon 1e-12, so all-zero rows
give similarity 0 and finite gradients); the terms come from :func:`losses.info_nce.info_nce`. The
loss is computed from one ``(N, N)`` similarity matrix with constant index tables and masks, so it
has no Python loop over anchors and compiles with XLA.

Batch layouts (``B = bt_size``, ``S = n_parts``; produced by ``data.pipeline.global_loss_batches``):

- ``exp_no=0`` G^R: ``2B`` rows ``[v1_0, v2_0, v1_1, v2_1, ...]`` (two views of B slices, interleaved).
  Terms ``(2i, 2i+1)`` and ``(2i+1, 2i)``; the denominator runs over all ``2B - 1`` other rows.
  Loss = sum / (2B).
- ``exp_no=1`` G^D-: ``3B`` rows ``[X, A1, A2]``; X holds B/S volumes x S partitions, volume-major
  (row ``S*v + k`` = volume v, partition k); A1, A2 are two augmented views of X. Anchor i < B,
  positives ``B+i``, ``2B+i``; negatives are all rows of another partition (``j % S != i % S``; the
  original hard-codes 4, identical for S = 4). Six terms (i,j2),(j2,i),(i,j3),(j3,i),(j2,j3),(j3,j2).
  Loss = sum / (3B).
- ``exp_no=2`` G^D: ``4B`` rows in blocks of ``4S``: ``[S1 part, A1 part, S2 part, A2 part]`` of S rows
  each (set 1, its augmented view, set 2, its view). Anchors are rows with ``i % 2S < S``; ``j2 = i+S``,
  ``j3 = i+2S``, ``j4 = i+3S`` (mod 4B); negatives as G^D-. Eight terms (i,j2),(j2,i),(i,j3),(j3,i),
  (j3,j4),(j4,j3),(j2,j4),(j4,j2). Loss = sum / (4B). The original's all-zero last block (§9.2.1) is
  a property of the batch, not of this formula.

In every term the denominator uses the similarities of the term's first element to the anchor's
negatives (as the original). ``reduction="none"`` returns one value per unit (per image for G^R, per
anchor for G^D- and G^D: the anchor's terms divided by 3 resp. 2) whose plain mean is the loss.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.errors import InputError
from losses.info_nce import info_nce, similarity_logits, unit_vectors
from losses.reduction import check_reduction, reduce_per_unit


def _index_table_terms(sim: tf.Tensor, anchor: np.ndarray, positive: np.ndarray, neg_mask: np.ndarray) -> tf.Tensor:
    """The terms ``l(a, p, N)`` of the module doc, gathered from one similarity matrix by index tables.

    Args:
        sim: ``(N, N)`` scaled similarities.
        anchor: ``(T, U)`` int rows whose similarities form the term (first element of each pair).
        positive: ``(T, U)`` int positive column of each term.
        neg_mask: ``(U, N)`` bool negatives of each unit (shared by the unit's T terms).

    Returns:
        ``(T, U)`` term values.
    """
    rows = tf.gather(sim, anchor)  # (T, U, N)
    s_pos = tf.gather_nd(sim, np.stack([anchor, positive], axis=-1))  # (T, U)
    return info_nce(s_pos, rows, neg_mask[None])  # (T, U)


def global_index_tables(exp_no: int, bt_size: int,
                        n_parts: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Constant index tables of one global loss variant.

    Returns:
        ``(anchor (T, U), positive (T, U), neg_mask (U, N), unit_divisor)``: the per-unit value is the sum
        of the unit's T terms divided by ``unit_divisor``.
    """
    b, s = int(bt_size), int(n_parts)
    if b < 1 or s < 1:
        raise InputError(f"--bt_size ({b}) and --n_parts ({s}) must be positive")
    if exp_no == 0:
        n = 2 * b
        idx = np.arange(n)
        partner = idx ^ 1  # (2B,)
        neg = np.ones((n, n), bool)
        neg[idx, idx] = False
        neg[idx, partner] = False
        return idx[None], partner[None], neg, 1.0
    if exp_no not in (1, 2):
        raise InputError(f"--global_loss_exp_no must be 0, 1 or 2, got {exp_no}")
    if b % s:
        raise InputError(f"--bt_size ({b}) must be a multiple of --n_parts ({s}) for the partition layouts")
    if exp_no == 1:
        n = 3 * b
        i = np.arange(b)
        j2, j3 = b + i, 2 * b + i
        anchor = np.stack([i, j2, i, j3, j2, j3])  # (6, B)
        positive = np.stack([j2, i, j3, i, j3, j2])  # (6, B)
        divisor = 3.0
    else:
        n = 4 * b
        i = np.array([k for k in range(n) if k % (2 * s) < s])  # (2B,)
        j2, j3, j4 = (i + s) % n, (i + 2 * s) % n, (i + 3 * s) % n
        anchor = np.stack([i, j2, i, j3, j3, j4, j2, j4])  # (8, 2B)
        positive = np.stack([j2, i, j3, i, j4, j3, j4, j2])  # (8, 2B)
        divisor = 2.0
    neg = (np.arange(n)[None, :] % s) != (i[:, None] % s)  # (U, N)
    return anchor, positive, neg, divisor


def global_contrastive_loss(z: tf.Tensor, exp_no: int, bt_size: int, n_parts: int = 4,
                            temperature: float = 0.1, reduction: str = "mean") -> tf.Tensor:
    """G^R (``exp_no=0``), G^D- (1) or G^D (2) on g1 outputs laid out as described in the module doc.

    Args:
        z: ``(N, D)`` projections, ``N = 2B, 3B, 4B`` for exp 0, 1, 2.
        exp_no: ``--global_loss_exp_no``.
        bt_size: B (``--bt_size``).
        n_parts: S (``--n_parts``), unused by G^R.
        temperature: tau (``--temp_fac``).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per-unit values, see module doc).

    Returns:
        Scalar loss (or per-unit values).
    """
    check_reduction(reduction)
    anchor, positive, neg_mask, divisor = global_index_tables(exp_no, bt_size, n_parts)
    n = neg_mask.shape[1]
    z = tf.convert_to_tensor(z)
    if z.shape.rank != 2:
        raise ValueError(f"z must be (N, D), got shape {z.shape}")
    if z.shape[0] is not None and z.shape[0] != n:
        raise ValueError(f"global loss exp {exp_no} with bt_size {bt_size} expects {n} rows, got {z.shape[0]}")
    zn = unit_vectors(z)  # (N, D)
    sim = similarity_logits("nd,md->nm", zn, zn, temperature)  # (N, N)
    terms = _index_table_terms(sim, anchor, positive, neg_mask)  # (T, U)
    per_unit = tf.reduce_sum(terms, axis=0) / divisor  # (U,)
    return reduce_per_unit(per_unit, reduction)  # (U,) or scalar
