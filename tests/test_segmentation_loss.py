"""Tests for losses.segmentation against a float64 NumPy reference written from ORIGINAL_SPEC §3.1."""
import math

import numpy as np
import pytest
import tensorflow as tf

from losses.segmentation import (DEFAULT_CLASS_WEIGHTS, dice_loss, segmentation_loss, soft_dice_per_class,
                                 weighted_cross_entropy)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_dice(logits, labels):
    n_img, _, _, n_cls = logits.shape
    p = _softmax(logits)
    out = np.zeros((n_img, n_cls))
    for n in range(n_img):
        for c in range(n_cls):
            inter = np.sum(p[n, :, :, c] * labels[n, :, :, c])
            out[n, c] = 2 * inter / (np.sum(p[n, :, :, c]) + np.sum(labels[n, :, :, c]) + 1e-10)
    return out


def ref_loss(logits, labels, dsc_loss, cw):
    if dsc_loss == 2:
        return 1 - ref_dice(logits, labels).mean()
    if dsc_loss == 1:
        return 1 - ref_dice(logits, labels)[:, 1:].mean()
    p = _softmax(logits)
    n_img, hh, ww, n_cls = logits.shape
    total = 0.0
    for n in range(n_img):
        for i in range(hh):
            for j in range(ww):
                w = sum(cw[c] * labels[n, i, j, c] for c in range(n_cls))
                ce = -sum(labels[n, i, j, c] * math.log(p[n, i, j, c]) for c in range(n_cls))
                total += w * ce
    return total / (n_img * hh * ww)


def _inputs(seed, n_cls, soft, shape=(3, 5, 6)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(*shape, n_cls))
    if soft:
        labels = _softmax(rng.normal(scale=3.0, size=(*shape, n_cls)))
    else:
        labels = np.eye(n_cls)[rng.integers(0, n_cls, size=shape)]
    return logits, labels


@pytest.mark.parametrize("dsc_loss", [0, 1, 2])
@pytest.mark.parametrize("n_cls", [2, 4, 8])
@pytest.mark.parametrize("soft", [False, True])
def test_matches_reference(dsc_loss, n_cls, soft):
    logits, labels = _inputs(dsc_loss * 10 + n_cls, n_cls, soft)
    cw = DEFAULT_CLASS_WEIGHTS[n_cls]
    expected = ref_loss(logits, labels, dsc_loss, cw)
    got = segmentation_loss(tf.constant(logits), tf.constant(labels), dsc_loss)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    per_image = segmentation_loss(tf.constant(logits), tf.constant(labels), dsc_loss, cw, reduction="none")
    assert per_image.shape == (3,)
    np.testing.assert_allclose(np.mean(per_image), expected, rtol=1e-10)
    # float32 path agrees too
    got32 = segmentation_loss(tf.constant(logits, tf.float32), tf.constant(labels, tf.float32), dsc_loss)
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_soft_dice_per_class_reference():
    logits, labels = _inputs(0, 3, False)
    np.testing.assert_allclose(soft_dice_per_class(tf.constant(logits), tf.constant(labels)), ref_dice(logits, labels),
                               rtol=1e-10)


def test_hand_computed_absent_class_and_perfect_prediction():
    # two classes, every pixel is class 0 and predicted with certainty: dice0 = 1, dice1 = 0 (absent)
    labels = np.zeros((1, 4, 4, 2))
    labels[..., 0] = 1
    logits = np.zeros((1, 4, 4, 2))
    logits[..., 0] = 100.0
    assert float(dice_loss(tf.constant(logits), tf.constant(labels))) == pytest.approx(0.5, abs=1e-9)
    assert float(dice_loss(tf.constant(logits), tf.constant(labels), include_background=False)) == \
        pytest.approx(1.0, abs=1e-9)
    # uniform prediction: dice_c = 2 * 0.5 * n_c / (0.5 * 16 + n_c)
    labels = np.zeros((1, 4, 4, 2))
    labels[0, :2, :, 1] = 1
    labels[0, 2:, :, 0] = 1
    d = 2 * 0.5 * 8 / (8 + 8)
    assert float(dice_loss(tf.constant(np.zeros((1, 4, 4, 2))), tf.constant(labels))) == pytest.approx(1 - d)


def test_hand_computed_weighted_ce():
    # zero logits: CE = log C everywhere, weight = cw of the pixel's class
    labels = np.eye(4)[np.array([[[0, 1], [2, 3]]])]  # (1, 2, 2, 4)
    cw = (0.1, 0.3, 0.3, 0.3)
    expected = np.mean([0.1, 0.3, 0.3, 0.3]) * math.log(4)
    got = weighted_cross_entropy(tf.constant(np.zeros((1, 2, 2, 4))), tf.constant(labels), cw)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_empty_labels_are_finite():
    logits = tf.constant(np.random.default_rng(3).normal(size=(2, 4, 4, 3)))
    labels = tf.zeros((2, 4, 4, 3), tf.float64)
    for dsc in (0, 1, 2):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = segmentation_loss(logits, labels, dsc)
        grad = tape.gradient(loss, logits)
        assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dsc_loss", [0, 1, 2])
def test_gradient_check(dsc_loss):
    logits, labels = _inputs(7, 3, True, shape=(2, 3, 3))
    lab = tf.constant(labels)
    theo, num = tf.test.compute_gradient(lambda x: segmentation_loss(x, lab, dsc_loss), [tf.constant(logits)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


def test_bad_arguments():
    logits, labels = _inputs(0, 5, False)
    with pytest.raises(ValueError):
        segmentation_loss(tf.constant(logits), tf.constant(labels), 0)  # no default weights for C=5
    with pytest.raises(ValueError):
        segmentation_loss(tf.constant(logits), tf.constant(labels), 3)
    with pytest.raises(ValueError):
        dice_loss(tf.constant(logits), tf.constant(labels), reduction="sum")
