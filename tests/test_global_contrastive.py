"""Tests for losses.global_contrastive against float64 loop references written from ORIGINAL_SPEC §3.2."""
import math

import numpy as np
import pytest
import tensorflow as tf

from common.errors import InputError
from losses.global_contrastive import global_contrastive_loss, global_index_tables


def _cos(a, b):
    return float(a @ b / (max(np.linalg.norm(a), 1e-6) * max(np.linalg.norm(b), 1e-6)))


def _term(z, a, p, negs, tau):
    num = math.exp(_cos(z[a], z[p]) / tau)
    den = num + sum(math.exp(_cos(z[a], z[n]) / tau) for n in negs)
    return -math.log(num / den)


def ref_gr(z, b, tau):
    total = 0.0
    for pos in range(0, 2 * b, 2):
        for a, p in ((pos, pos + 1), (pos + 1, pos)):
            # denominator: all other samples, the positive included
            others = [k for k in range(2 * b) if k != a]
            num = math.exp(_cos(z[a], z[p]) / tau)
            den = sum(math.exp(_cos(z[a], z[k]) / tau) for k in others)
            total += -math.log(num / den)
    return total / (2 * b)


def ref_gd_minus(z, b, s, tau):
    bs = 3 * b
    total = 0.0
    for i in range(b):
        j2, j3 = b + i, 2 * b + i
        removed = list(range(i % s, bs, s))
        negs = [k for k in range(bs) if k not in removed]
        for a, p in ((i, j2), (j2, i), (i, j3), (j3, i), (j2, j3), (j3, j2)):
            total += _term(z, a, p, negs, tau)
    return total / (3 * b)


def ref_gd(z, b, s, tau):
    bs = 4 * b
    factor = s if b == 12 else 10 * s
    total = 0.0
    for i in range(bs):
        if i % (2 * s) >= s:
            continue
        j2, j3, j4 = (i + s) % bs, (i + 2 * s) % bs, (i + 3 * s) % bs
        removed = {(i + k * s) % bs for k in range(factor * s)}
        negs = [k for k in range(bs) if k not in removed]
        for a, p in ((i, j2), (j2, i), (i, j3), (j3, i), (j3, j4), (j4, j3), (j2, j4), (j4, j2)):
            total += _term(z, a, p, negs, tau)
    return total / (4 * b)


def _ref(z, exp_no, b, s, tau):
    if exp_no == 0:
        return ref_gr(z, b, tau)
    return ref_gd_minus(z, b, s, tau) if exp_no == 1 else ref_gd(z, b, s, tau)


CASES = [(0, 1, 4), (0, 3, 4), (0, 5, 4), (1, 4, 4), (1, 8, 4), (1, 12, 4), (1, 6, 3), (1, 6, 2),
         (2, 4, 4), (2, 8, 4), (2, 12, 4), (2, 6, 3), (2, 4, 2)]
ROWS = {0: 2, 1: 3, 2: 4}


@pytest.mark.parametrize("exp_no,b,s", CASES)
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_reference(exp_no, b, s, tau):
    rng = np.random.default_rng(100 * exp_no + 10 * b + s)
    z = rng.normal(size=(ROWS[exp_no] * b, 6))
    expected = _ref(z, exp_no, b, s, tau)
    got = global_contrastive_loss(tf.constant(z), exp_no, b, s, temperature=tau)
    np.testing.assert_allclose(float(got), expected, rtol=1e-9)
    per_unit = global_contrastive_loss(tf.constant(z), exp_no, b, s, temperature=tau, reduction="none")
    assert per_unit.shape == ((2 * b,) if exp_no in (0, 2) else (b,))
    np.testing.assert_allclose(float(np.mean(per_unit)), expected, rtol=1e-9)


def test_negative_counts_for_readme_configuration():
    _, _, neg, _ = global_index_tables(2, 12, 4)
    assert neg.shape == (24, 48) and np.all(neg.sum(axis=1) == 36)
    anchor, positive, neg, _ = global_index_tables(1, 12, 4)
    assert anchor.shape == (6, 12) and np.all(neg.sum(axis=1) == 27)
    anchor, _, _, _ = global_index_tables(2, 12, 4)
    assert anchor.shape == (8, 24)


def test_hand_computed_gr():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # B = 1: the denominator holds only the positive -> loss 0
    assert float(global_contrastive_loss(tf.constant(np.stack([e1, 3 * e2])), 0, 1)) == pytest.approx(0.0, abs=1e-12)
    # B = 2, tau = 1: cos(z0, z1) = 1, cos(z2, z3) = -1, every cross pair 0
    z = np.stack([e1, 2 * e1, e2, -e2])
    expected = (2 * math.log((math.e + 2) / math.e) + 2 * math.log(1 + 2 * math.e)) / 4
    got = global_contrastive_loss(tf.constant(z), 0, 2, temperature=1.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_hand_computed_gd_minus_identical_vectors():
    # all vectors equal: every term is -log(1 / (1 + #neg)) with #neg = 3B - 3B/S
    b, s = 4, 4
    z = np.ones((3 * b, 3))
    n_neg = 3 * b - 3 * b // s
    expected = 6 * b * math.log(1 + n_neg) / (3 * b)
    assert float(global_contrastive_loss(tf.constant(z), 1, b, s)) == pytest.approx(expected, rel=1e-12)


def test_scale_invariance():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(32, 8))
    scale = rng.uniform(0.1, 10.0, size=(32, 1))
    a = global_contrastive_loss(tf.constant(z), 2, 8, 4)
    b = global_contrastive_loss(tf.constant(z * scale), 2, 8, 4)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-10)


@pytest.mark.parametrize("exp_no,b,s", [(0, 3, 4), (1, 4, 4), (2, 4, 2)])
def test_gradient_check(exp_no, b, s):
    z = np.random.default_rng(9).normal(size=(ROWS[exp_no] * b, 3))
    theo, num = tf.test.compute_gradient(
        lambda x: global_contrastive_loss(x, exp_no, b, s, temperature=0.5), [tf.constant(z)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-5)


@pytest.mark.parametrize("exp_no,b", [(0, 4), (1, 8), (2, 12)])
def test_zero_rows_finite(exp_no, b):
    """The original G^D batch has an all-zero block (§9.2.1): loss and gradients stay finite."""
    z = np.random.default_rng(1).normal(size=(ROWS[exp_no] * b, 16)).astype(np.float32)
    z[-16:] = 0.0
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        loss = global_contrastive_loss(zt, exp_no, b, 4)
    grad = tape.gradient(loss, zt)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))
    expected = _ref(z.astype(np.float64), exp_no, b, 4, 0.1)  # zero rows: cosine 0 in the reference too
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("exp_no,b", [(0, 4), (1, 12), (2, 12)])
def test_xla_matches_eager(exp_no, b):
    z = tf.constant(np.random.default_rng(2).normal(size=(ROWS[exp_no] * b, 128)).astype(np.float32))

    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = global_contrastive_loss(x, exp_no, b, 4)
        return loss, tape.gradient(loss, x)

    eager_loss, eager_grad = f(z)
    xla_loss, xla_grad = tf.function(f, jit_compile=True)(z)
    np.testing.assert_allclose(float(xla_loss), float(eager_loss), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(xla_grad.numpy(), eager_grad.numpy(), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(InputError, match="n_parts"):
        global_contrastive_loss(tf.zeros((30, 4)), 2, 10, 4)
    with pytest.raises(InputError):
        global_contrastive_loss(tf.zeros((8, 4)), 3, 2, 4)
    with pytest.raises(ValueError, match="expects 48 rows"):
        global_contrastive_loss(tf.zeros((36, 4)), 2, 12, 4)
    with pytest.raises(InputError, match="reduction"):
        global_contrastive_loss(tf.zeros((48, 4)), 2, 12, 4, reduction="sum")
