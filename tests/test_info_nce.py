"""Tests for losses.info_nce against hand-computed values and a float64 NumPy reference."""
import math

import numpy as np
import pytest
import tensorflow as tf

from losses.info_nce import info_nce, masked_logsumexp, similarity_logits, unit_vectors


def _ref_info_nce(s_pos, s_neg, mask):
    """Loop reference: -log(e^p / (e^p + sum_{k kept} e^{n_k})) per row."""
    out = np.zeros(s_pos.shape)
    for idx in np.ndindex(s_pos.shape):
        den = math.exp(s_pos[idx]) + sum(math.exp(v) for v, m in zip(s_neg[idx], mask[idx]) if m)
        out[idx] = -math.log(math.exp(s_pos[idx]) / den)
    return out


def test_hand_computed_terms():
    # no kept negative -> 0; one negative equal to the positive -> log 2; K equal ones -> log(1 + K)
    s_pos = tf.constant([2.0, 2.0, 0.5], tf.float64)
    s_neg = tf.constant([[7.0, 9.0], [2.0, -3.0], [0.5, 0.5]], tf.float64)
    mask = tf.constant([[False, False], [True, False], [True, True]])
    got = info_nce(s_pos, s_neg, mask).numpy()
    np.testing.assert_allclose(got, [0.0, math.log(2.0), math.log(3.0)], rtol=1e-12, atol=1e-12)
    # no mask: every negative counts
    assert float(info_nce(tf.constant(0.0, tf.float64), tf.constant([0.0, 0.0, 0.0], tf.float64))) == \
        pytest.approx(math.log(4.0), rel=1e-12)


def test_matches_reference_with_broadcast_mask():
    rng = np.random.default_rng(0)
    s_pos = rng.normal(size=(3, 4)) * 5
    s_neg = rng.normal(size=(3, 4, 6)) * 5
    mask = rng.random((4, 6)) < 0.5  # broadcast over the leading axis
    got = info_nce(tf.constant(s_pos), tf.constant(s_neg), tf.constant(mask)).numpy()
    np.testing.assert_allclose(got, _ref_info_nce(s_pos, s_neg, np.broadcast_to(mask, s_neg.shape)), rtol=1e-12)


def test_masked_logsumexp_values_and_fully_masked_row():
    logits = tf.constant([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], tf.float64)
    mask = tf.constant([[True, False, True], [False, False, False]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        out = masked_logsumexp(logits, mask)
    grad = tape.gradient(out, logits).numpy()
    assert float(out[0]) == pytest.approx(math.log(math.e + math.e ** 3), rel=1e-12)
    assert np.isfinite(float(out[1])) and float(out[1]) < -1e8  # finite, for the caller to discard
    assert np.all(np.isfinite(grad)) and grad[0, 1] == 0.0  # masked entries get no gradient
    np.testing.assert_allclose(float(masked_logsumexp(logits[0])), math.log(math.e + math.e ** 2 + math.e ** 3),
                               rtol=1e-12)


def test_similarity_logits_and_unit_vectors():
    z = tf.constant([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], tf.float64)
    u = unit_vectors(z)
    np.testing.assert_allclose(u.numpy(), [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-12)
    sim = similarity_logits("nd,md->nm", u, u, 0.5).numpy()
    np.testing.assert_allclose(sim, [[2.0, 0.0, -1.6], [0.0, 0.0, 0.0], [-1.6, 0.0, 2.0]], atol=1e-12)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = tf.reduce_sum(similarity_logits("nd,md->nm", unit_vectors(z), unit_vectors(z), 0.1))
    assert np.all(np.isfinite(tape.gradient(total, z).numpy()))  # zero row: finite gradient


def test_xla_matches_eager():
    rng = np.random.default_rng(1)
    s_pos = tf.constant(rng.normal(size=(5, 7)).astype(np.float32))
    s_neg = tf.constant(rng.normal(size=(5, 7, 9)).astype(np.float32))
    mask = tf.constant(rng.random((5, 7, 9)) < 0.3)

    def f(p, n):
        with tf.GradientTape() as tape:
            tape.watch([p, n])
            loss = tf.reduce_sum(info_nce(p, n, mask))
        return loss, tape.gradient(loss, [p, n])

    eager_loss, eager_grads = f(s_pos, s_neg)
    xla_loss, xla_grads = tf.function(f, jit_compile=True)(s_pos, s_neg)
    np.testing.assert_allclose(float(xla_loss), float(eager_loss), rtol=1e-6)
    for a, b in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
