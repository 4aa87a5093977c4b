"""Tests of losses/pseudo_label_contrastive.py against a float64 loop reference of ORIGINAL_SPEC §3.4.4."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from common.errors import InputError
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss


# ----------------------------------------------------------------------------------------------
# Independent reference: plain loops over pairs, classes, samples and terms (float64).
# ----------------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    """tf.math.l2_normalize semantics: v / sqrt(max(|v|^2, 1e-12))."""
    return v / math.sqrt(max(float(np.dot(v, v)), 1e-12))


def reference_plc_loss(emb, lab, yx, valid, tau=0.1, inter=True, replicate=False):
    """Loop implementation of §3.4.4; returns (scalar, per-pair S_k / D list)."""
    emb, lab = np.asarray(emb, np.float64), np.asarray(lab, np.float64)
    n2, _, _, _ = emb.shape
    num_pairs, num_classes, num_samples = n2 // 2, lab.shape[-1], yx.shape[2]

    def prototype(img, c):
        weight = lab[img, :, :, c]
        if weight.sum() <= 0:
            return None  # absent class (NaN in the original)
        return (emb[img] * weight[..., None]).sum(axis=(0, 1)) / weight.sum()

    def sim(u, v):
        return float(np.dot(_unit(u), _unit(v))) / tau

    pair_sums = []
    for k in range(num_pairs):
        a, b = k, num_pairs + k
        protos = {img: {c: prototype(img, c) for c in range(1, num_classes)} for img in (a, b)}
        s_k = 0.0
        for c in range(1, num_classes):
            for p in range(num_samples):
                for img, other in ((a, b), (b, a)):
                    if not valid[img, c - 1, p]:
                        continue
                    z = emb[img, yx[img, c - 1, p, 0], yx[img, c - 1, p, 1]]
                    den = 0.0
                    for c2 in range(1, num_classes):
                        if protos[img][c2] is not None:
                            den += math.exp(sim(z, protos[img][c2]))
                        if inter and protos[other][c2] is not None:
                            den += math.exp(sim(z, protos[other][c2]))
                    if protos[img][c] is not None:
                        s_k += -math.log(math.exp(sim(z, protos[img][c])) / den)
                    if inter and protos[other][c] is not None:
                        s_k += -math.log(math.exp(sim(z, protos[other][c])) / den)
        pair_sums.append(s_k)
    d = num_samples * (num_classes - 1) * (2 if inter else 1)
    if replicate:
        acc = 0.0
        for s_k in pair_sums:
            acc = (acc + s_k) / d
        return acc / num_pairs, None
    return sum(pair_sums) / (num_pairs * d), [s / d for s in pair_sums]


def _random_case(rng, num_pairs, num_classes, num_samples, channels, size=6, absent=True, invalid=True):
    """Random embeddings, one-hot labels (some classes knocked out), anchors (some invalid)."""
    n2 = 2 * num_pairs
    emb = rng.normal(size=(n2, size, size, channels))
    lbl = rng.integers(0, num_classes, size=(n2, size, size))
    if absent and num_classes > 2:
        for img in range(n2):
            if rng.random() < 0.4:
                lbl[img][lbl[img] == rng.integers(1, num_classes)] = 0
    onehot = np.eye(num_classes)[lbl]
    yx = rng.integers(0, size, size=(n2, num_classes - 1, num_samples, 2)).astype(np.int32)
    valid = rng.random((n2, num_classes - 1, num_samples)) > (0.3 if invalid else -1.0)
    return emb, onehot, yx, valid


def _loss(emb, lab, yx, valid, **kw):
    return pseudo_label_local_contrastive_loss(
        tf.constant(emb), tf.constant(lab), tf.constant(yx), tf.constant(valid), **kw
    )


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_pairs,num_classes,inter", list(itertools.product((1, 2, 3), (2, 3, 4), (True, False))))
def test_matches_loop_reference_grid(num_pairs, num_classes, inter):
    rng = np.random.default_rng(100 * num_pairs + 10 * num_classes + inter)
    for num_samples, channels in itertools.product((1, 3), (4, 16)):
        emb, lab, yx, valid = _random_case(rng, num_pairs, num_classes, num_samples, channels)
        tau = 0.1 if channels == 4 else 0.5
        want, want_pairs = reference_plc_loss(emb, lab, yx, valid, tau, inter)
        got = _loss(emb, lab, yx, valid, temperature=tau, inter_image=inter)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
        per_pair = _loss(emb, lab, yx, valid, temperature=tau, inter_image=inter, reduction="none").numpy()
        np.testing.assert_allclose(per_pair, want_pairs, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(per_pair.mean(), got.numpy(), rtol=1e-12)
        want_rep, _ = reference_plc_loss(emb, lab, yx, valid, tau, inter, replicate=True)
        got_rep = _loss(emb, lab, yx, valid, temperature=tau, inter_image=inter, replicate_original_weighting=True)
        np.testing.assert_allclose(got_rep.numpy(), want_rep, rtol=1e-10, atol=1e-15)
        # float32 path agrees too.
        got32 = _loss(emb.astype(np.float32), lab.astype(np.float32), yx, valid, temperature=tau, inter_image=inter)
        np.testing.assert_allclose(got32.numpy(), want, rtol=1e-5, atol=1e-5)


def test_hand_computed_inter_case():
    """B=1, C=3, P=1, 2-d embeddings: image b is image a rotated by 60 degrees."""
    theta, t = math.pi / 3, 10.0
    cos, sin = math.cos(theta), math.sin(theta)
    lbl = np.zeros((4, 4), np.int64)
    lbl[0, :] = 1
    lbl[1, :] = 2
    emb = np.zeros((2, 4, 4, 2))
    emb[..., :] = (3.0, -7.0)  # background: must not matter
    # Class pixels share a direction but not a norm (prototype direction = that direction).
    scale = np.array([1.0, 2.0, 0.5, 3.0])[:, None]
    emb[0, 0] = scale * (1.0, 0.0)
    emb[0, 1] = scale * (0.0, 1.0)
    emb[1, 0] = scale * (cos, sin)
    emb[1, 1] = scale * (-sin, cos)
    lab = np.eye(3)[np.stack([lbl, lbl])]
    yx = np.array([[[[0, 2]], [[1, 3]]], [[[0, 1]], [[1, 0]]]], np.int32)  # (2, 2, 1, 2)
    valid = np.ones((2, 2, 1), bool)
    e = math.exp
    dens = [
        e(t) + 1 + e(t * cos) + e(-t * sin),  # u, class 1, image a
        e(t) + 1 + e(t * cos) + e(t * sin),  # v, class 1, image b
        1 + e(t) + e(t * sin) + e(t * cos),  # u, class 2, image a
        1 + e(t) + e(-t * sin) + e(t * cos),  # v, class 2, image b
    ]
    want = sum(2 * math.log(d) - t - t * cos for d in dens) / 4  # D = 2 * P * (C-1) = 4, B = 1
    got = _loss(emb, lab, yx, valid, temperature=0.1, inter_image=True)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # Intra: only own prototypes, 1 term per anchor: -log(e^t / (e^t + e^0)); D = 2.
    want_intra = 4 * math.log(1 + math.exp(-t)) / 2
    got_intra = _loss(emb, lab, yx, valid, temperature=0.1, inter_image=False)
    np.testing.assert_allclose(got_intra.numpy(), want_intra, rtol=1e-10)


def test_original_weighting_formula():
    """acc = (acc + S_k) / D per pair then / B  ==  sum_k S_k / (B D^(B-k))."""
    rng = np.random.default_rng(7)
    emb, lab, yx, valid = _random_case(rng, 3, 4, 3, 4)
    per_pair = _loss(emb, lab, yx, valid, reduction="none").numpy()  # S_k / D
    d = 2 * 3 * 3
    want = sum(per_pair[k] * d / (3 * d ** (3 - k)) for k in range(3))
    got = _loss(emb, lab, yx, valid, replicate_original_weighting=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(InputError):
        _loss(emb, lab, yx, valid, replicate_original_weighting=True, reduction="none")


def test_gradient_check_float64():
    rng = np.random.default_rng(3)
    emb, lab, yx, valid = _random_case(rng, 2, 3, 2, 3, size=3)
    lab_t, yx_t, valid_t = tf.constant(lab), tf.constant(yx), tf.constant(valid)
    for inter in (True, False):
        @tf.function  # many perturbed evaluations: a traced graph keeps this fast
        def f(x, inter=inter):
            return pseudo_label_local_contrastive_loss(x, lab_t, yx_t, valid_t, inter_image=inter)

        theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(emb)], delta=1e-6)
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6, rtol=1e-5)


def test_xla_matches_eager():
    rng = np.random.default_rng(11)
    emb, lab, yx, valid = _random_case(rng, 3, 4, 3, 16, size=8)
    emb, lab = emb.astype(np.float32), lab.astype(np.float32)
    for inter, rep in ((True, False), (False, True)):
        kw = dict(inter_image=inter, replicate_original_weighting=rep)

        def value_and_grad(x, y, a, v, kw=kw):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = pseudo_label_local_contrastive_loss(x, y, a, v, **kw)
            return loss, tape.gradient(loss, x)

        args = [tf.constant(t) for t in (emb, lab, yx, valid)]
        eager_loss, eager_grad = value_and_grad(*args)
        xla_loss, xla_grad = tf.function(value_and_grad, jit_compile=True)(*args)
        np.testing.assert_allclose(xla_loss.numpy(), eager_loss.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xla_grad.numpy(), eager_grad.numpy(), rtol=1e-4, atol=1e-5)


def test_dynamic_shapes_and_half_precision():
    rng = np.random.default_rng(23)
    emb, lab, yx, valid = _random_case(rng, 2, 3, 2, 4)
    fn = tf.function(
        pseudo_label_local_contrastive_loss,
        input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32), tf.TensorSpec([None, None, None, 3]),
                         tf.TensorSpec([None, 2, None, 2], tf.int32), tf.TensorSpec([None, 2, None], tf.bool)],
    )
    want, _ = reference_plc_loss(emb, lab, yx, valid)
    got = fn(emb.astype(np.float32), lab.astype(np.float32), yx, valid)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    got16 = _loss(emb.astype(np.float16), lab.astype(np.float16), yx, valid)
    assert got16.dtype == tf.float32
    np.testing.assert_allclose(got16.numpy(), want, rtol=1e-2)


def _grad(emb, lab, yx, valid, **kw):
    x = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = _loss_t(x, lab, yx, valid, **kw)
    return loss.numpy(), tape.gradient(loss, x).numpy()


def _loss_t(x, lab, yx, valid, **kw):
    return pseudo_label_local_contrastive_loss(x, tf.constant(lab), tf.constant(yx), tf.constant(valid), **kw)


@pytest.mark.parametrize("jit", [False, True])
def test_all_invalid_anchors_give_zero_and_finite_gradient(jit):
    rng = np.random.default_rng(5)
    emb, lab, yx, valid = _random_case(rng, 2, 4, 3, 4)
    yx[...] = 1000  # the original's sentinel: must never be gathered
    valid[...] = False
    emb = emb.astype(np.float32)
    lab = lab.astype(np.float32)

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _loss_t(x, lab, yx, valid)
        return loss, tape.gradient(loss, x)

    fn = tf.function(value_and_grad, jit_compile=True) if jit else value_and_grad
    loss, grad = fn(tf.constant(emb))
    assert loss.numpy() == 0.0
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy() == 0.0)


def test_absent_classes_and_zero_embeddings_are_finite():
    rng = np.random.default_rng(9)
    emb, lab, yx, valid = _random_case(rng, 2, 4, 2, 4, absent=False)
    for img, cls in ((0, 2), (3, 3)):  # class 2 absent from image 0, class 3 from image 3
        lab[img, ..., 0] += lab[img, ..., cls]  # those pixels become background
        lab[img, ..., cls] = 0.0
    emb[1, 0, 0] = 0.0  # an all-zero anchor embedding is a legitimate (zero-similarity) value
    yx[1, 0, 0] = (0, 0)
    valid[1, 0, 0] = True
    for inter in (True, False):
        loss, grad = _grad(emb, lab, yx, valid, inter_image=inter)
        want, _ = reference_plc_loss(emb, lab, yx, valid, 0.1, inter)
        np.testing.assert_allclose(loss, want, rtol=1e-10)
        assert np.all(np.isfinite(grad))
    # Every foreground class absent everywhere: nothing to contrast.
    lab_bg = np.zeros_like(lab)
    lab_bg[..., 0] = 1.0
    loss, grad = _grad(emb, lab_bg, yx, valid)
    assert loss == 0.0 and np.all(grad == 0.0)


def test_stop_gradient_prototypes_changes_gradient_not_value():
    rng = np.random.default_rng(13)
    emb, lab, yx, valid = _random_case(rng, 1, 3, 2, 4, absent=False, invalid=False)
    loss, grad = _grad(emb, lab, yx, valid)
    loss_sg, grad_sg = _grad(emb, lab, yx, valid, stop_gradient_prototypes=True)
    np.testing.assert_allclose(loss_sg, loss, rtol=1e-12)
    # With constant prototypes only the anchor pixels receive gradient.
    anchor_mask = np.zeros(emb.shape[:3], bool)
    for n, c, p in itertools.product(range(2), range(2), range(2)):
        anchor_mask[n, yx[n, c, p, 0], yx[n, c, p, 1]] = True
    assert np.all(grad_sg[~anchor_mask] == 0.0)
    assert np.abs(grad[~anchor_mask]).max() > 1e-6
    assert not np.allclose(grad, grad_sg)


def test_soft_labels_weight_the_prototypes():
    rng = np.random.default_rng(17)
    emb, lab, yx, valid = _random_case(rng, 2, 3, 2, 4, absent=False)
    soft = 0.7 * lab + 0.3 * rng.dirichlet(np.ones(3), size=lab.shape[:3])
    want, _ = reference_plc_loss(emb, soft, yx, valid, 0.1, True)
    np.testing.assert_allclose(_loss(emb, soft, yx, valid).numpy(), want, rtol=1e-10)


def test_shape_and_argument_errors():
    rng = np.random.default_rng(0)
    emb, lab, yx, valid = _random_case(rng, 1, 3, 2, 4)
    with pytest.raises(InputError):
        _loss(emb, lab, yx[:, :1], valid[:, :1])  # C-1 slots disagree with labels
    with pytest.raises(InputError):
        _loss(emb[:1], lab[:1], yx[:1], valid[:1])  # odd number of images
    with pytest.raises(InputError):
        _loss(emb, lab, yx, valid, reduction="sum")


def test_bench_quick_runs():
    from bench import losses as bench_losses

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench_losses.main(["--quick", "--repeats", "1", "--parts", "plc,unet"])
    report = json.loads(buf.getvalue())
    plc = report["pseudo_label_contrastive"]
    assert plc["max_abs_diff_vs_reference"] < 1e-4
    for key in ("eager_s", "graph_s", "xla_s", "reference_loop_s"):
        assert plc["forward"][key] > 0
    assert report["fraction_of_unet_step"]["pseudo_label_contrastive"]["graph"] > 0
