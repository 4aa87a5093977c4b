"""Tests for losses.local_contrastive against float64 loop references written from ORIGINAL_SPEC §3.3."""
import math

import numpy as np
import pytest
import tensorflow as tf

from common.errors import InputError
from losses.local_contrastive import local_contrastive_loss, region_tables
from models.heads import build_g2


def _cos(a, b):
    return float(a @ b / (max(np.linalg.norm(a), 1e-6) * max(np.linalg.norm(b), 1e-6)))


def _region(f, rc, region_size, proj):
    r, c = rc
    vec = f[r:r + 3, c:c + 3, :].reshape(-1) if region_size == 1 else f[r, c, :]
    return vec @ proj if proj is not None else vec


def ref_lr(f, num_regions, region_size, k, tau, proj=None):
    """L^R: loop over pairs (a, b) = (2i, 2i+1), regions and negatives."""
    pos, neg = region_tables(f.shape[1], f.shape[2], num_regions, region_size)
    total = 0.0
    for i in range(0, f.shape[0], 2):
        fa, fb = f[i], f[i + 1]
        for r in range(len(pos)):
            ra, rb = _region(fa, pos[r], region_size, proj), _region(fb, pos[r], region_size, proj)
            num = math.exp(_cos(ra, rb) / tau)
            den_a = den_b = 0.0
            for n in range(k):
                na, nb = _region(fa, neg[r, n], region_size, proj), _region(fb, neg[r, n], region_size, proj)
                den_a += math.exp(_cos(ra, na) / tau) + math.exp(_cos(ra, nb) / tau)
                den_b += math.exp(_cos(rb, nb) / tau) + math.exp(_cos(rb, na) / tau)
            total += -math.log(num / (num + den_a)) - math.log(num / (num + den_b))
    return total / (len(pos) * f.shape[0])


def ref_ld(f, num_regions, region_size, k, tau, s=4, proj=None):
    """L^D: anchors in the first half, partners i+A, (i+S)%A, (i+2S)%A; anchor-side terms only."""
    pos, neg = region_tables(f.shape[1], f.shape[2], num_regions, region_size)
    a_count = f.shape[0] // 2
    total = 0.0
    for i in range(a_count):
        for j in (a_count + i, (i + s) % a_count, (i + 2 * s) % a_count):
            for r in range(len(pos)):
                anc = _region(f[i], pos[r], region_size, proj)
                num = math.exp(_cos(anc, _region(f[j], pos[r], region_size, proj)) / tau)
                den = 0.0
                for n in range(k):
                    den += math.exp(_cos(anc, _region(f[i], neg[r, n], region_size, proj)) / tau)
                    den += math.exp(_cos(anc, _region(f[j], neg[r, n], region_size, proj)) / tau)
                total += -math.log(num / (num + den))
    return total / (len(pos) * f.shape[0])


def test_tables_for_readme_configuration():
    """ACDC, l = 3 (48x48): 3x3 -> m = 44 (q, h, t = 11, 22, 33); 1x1 -> m = 47 (11, 23, 35)."""
    pos, neg = region_tables(48, 48, 13, 1)
    assert pos.tolist() == [[0, 0], [0, 22], [0, 44], [22, 0], [22, 22], [22, 44], [44, 0], [44, 22], [44, 44],
                            [11, 11], [11, 33], [33, 11], [33, 33]]
    assert neg[0].tolist() == [[0, 22], [11, 11], [11, 22], [22, 0], [22, 11]]
    assert neg[8].tolist() == [[22, 33], [22, 44], [44, 22], [33, 33], [33, 22]]
    assert neg[12].tolist() == [[22, 22], [22, 44], [44, 22], [44, 44], [33, 11]]
    pos, neg = region_tables(48, 48, 13, 0)
    assert pos[-4:].tolist() == [[11, 11], [11, 35], [35, 11], [35, 35]]
    assert neg[11].tolist() == [[23, 0], [23, 23], [47, 0], [0, 23], [11, 11]]
    assert neg[2].tolist() == [[0, 23], [23, 23], [23, 47], [35, 11], [11, 35]]
    pos, neg = region_tables(48, 48, 9, 1)
    assert pos.shape == (9, 2) and neg[4].tolist() == [[0, 0], [0, 22], [22, 0], [22, 44], [44, 22]]
    # non-square maps use rows from h and columns from w
    pos, _ = region_tables(8, 12, 9, 1)
    assert pos[8].tolist() == [4, 8]
    # every 3x3 region lies inside the map
    for size in (1, 0):
        pos, neg = region_tables(10, 14, 13, size)
        extent = 3 if size == 1 else 1
        coords = np.concatenate([pos, neg.reshape(-1, 2)])
        assert coords.min() >= 0 and np.all(coords[:, 0] + extent <= 10) and np.all(coords[:, 1] + extent <= 14)


GRID = [(exp_no, regions, size, k) for exp_no in (0, 1) for regions in (9, 13) for size in (0, 1)
        for k in (None, 3)]


@pytest.mark.parametrize("exp_no,regions,size,k", GRID)
def test_matches_reference(exp_no, regions, size, k):
    rng = np.random.default_rng(hash((exp_no, regions, size, k)) % 2**32)
    n = 4 if exp_no == 0 else 24
    f = rng.normal(size=(n, 8, 10, 3))
    used_k = k if k is not None else (5 if exp_no == 0 else 4)
    ref = ref_lr if exp_no == 0 else ref_ld
    expected = ref(f, regions, size, used_k, 0.1)
    got = local_contrastive_loss(tf.constant(f), exp_no, regions, size, k, temperature=0.1)
    np.testing.assert_allclose(float(got), expected, rtol=1e-9)
    per_unit = local_contrastive_loss(tf.constant(f), exp_no, regions, size, k, temperature=0.1, reduction="none")
    assert per_unit.shape == ((n,) if exp_no == 0 else (n // 2,))
    np.testing.assert_allclose(float(np.mean(per_unit)), expected, rtol=1e-9)


@pytest.mark.parametrize("exp_no", [0, 1])
def test_projection_matches_reference(exp_no):
    rng = np.random.default_rng(4)
    n = 4 if exp_no == 0 else 12
    f = rng.normal(size=(n, 6, 6, 2))
    w = rng.normal(size=(18, 5))
    ref = ref_lr if exp_no == 0 else ref_ld
    kwargs = {} if exp_no == 0 else {"s": 2}
    expected = ref(f, 13, 1, 5 if exp_no == 0 else 4, 0.5, proj=w, **kwargs)
    got = local_contrastive_loss(tf.constant(f), exp_no, 13, 1, temperature=0.5, n_parts=2,
                                 projection=lambda v: tf.matmul(v, tf.constant(w)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-9)


def test_keras_g2_projection():
    g2, proj = build_g2(4, wgt_en=1, local_reg_size=1)
    f = np.random.default_rng(6).normal(size=(4, 8, 8, 4)).astype(np.float32)
    w = proj.get_layer("g2_seg_pred").kernel.numpy().astype(np.float64)
    got = local_contrastive_loss(tf.constant(f), 0, 13, 1, projection=proj)
    np.testing.assert_allclose(float(got), ref_lr(f.astype(np.float64), 13, 1, 5, 0.1, proj=w), rtol=1e-4)
    assert tuple(g2(f).shape) == (4, 8, 8, 4)


def test_hand_computed_identical_features():
    # every region identical: each term is log(1 + 2K)
    f = np.ones((4, 8, 8, 3))
    assert float(local_contrastive_loss(tf.constant(f), 0, 13, 1)) == pytest.approx(math.log(11), rel=1e-12)
    # L^D: 3 terms per anchor and region, each log(1 + 2*4), normalised by R * 2A -> 1.5 log 9
    f = np.ones((24, 8, 8, 3))
    assert float(local_contrastive_loss(tf.constant(f), 1, 9, 0)) == pytest.approx(1.5 * math.log(9), rel=1e-12)


def test_hand_computed_orthogonal_negatives():
    # 1x1 regions, 9 regions on a 3x3 map (m = 2): the positive regions are the 9 pixels; make the
    # pixel vectors one-hot per position and identical in both views -> s_pos = 1/tau, s_neg = 0
    f = np.eye(9).reshape(1, 3, 3, 9).repeat(2, axis=0)
    tau = 0.5
    expected = math.log(1 + 2 * 5 * math.exp(-1 / tau))
    got = local_contrastive_loss(tf.constant(f), 0, 9, 0, temperature=tau)
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("exp_no,size", [(0, 0), (0, 1), (1, 1)])
def test_gradient_check(exp_no, size):
    n = 2 if exp_no == 0 else 6
    f = np.random.default_rng(8).normal(size=(n, 6, 6, 1) if size == 1 else (n, 4, 4, 2))
    theo, num = tf.test.compute_gradient(
        lambda x: local_contrastive_loss(x, exp_no, 9, size, temperature=0.5, n_parts=1), [tf.constant(f)])
    np.testing.assert_allclose(theo[0], num[0], atol=1e-5)
    assert np.abs(theo[0]).max() > 1e-3


@pytest.mark.parametrize("exp_no", [0, 1])
def test_zero_features_finite(exp_no):
    f = tf.zeros((24, 8, 8, 4))
    with tf.GradientTape() as tape:
        tape.watch(f)
        loss = local_contrastive_loss(f, exp_no, 13, 1)
    grad = tape.gradient(loss, f)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("exp_no,size", [(0, 1), (0, 0), (1, 1)])
def test_xla_matches_eager(exp_no, size):
    n = 20 if exp_no == 0 else 24
    f = tf.constant(np.random.default_rng(3).normal(size=(n, 12, 12, 8)).astype(np.float32))
    _, proj = build_g2(8, wgt_en=1, local_reg_size=1)
    projection = proj if size == 1 else None

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = local_contrastive_loss(x, exp_no, 13, size, projection=projection)
        return loss, tape.gradient(loss, x)

    eager_loss, eager_grad = fn(f)
    xla_loss, xla_grad = tf.function(fn, jit_compile=True)(f)
    np.testing.assert_allclose(float(xla_loss), float(eager_loss), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(xla_grad.numpy(), eager_grad.numpy(), atol=1e-5)


def test_bad_arguments():
    f = tf.zeros((4, 8, 8, 2))
    with pytest.raises(InputError):
        local_contrastive_loss(f, 0, 10, 1)
    with pytest.raises(InputError):
        local_contrastive_loss(f, 0, 13, 1, num_negatives=6)
    with pytest.raises(InputError):
        local_contrastive_loss(f, 2, 13, 1)
    with pytest.raises(InputError):
        local_contrastive_loss(tf.zeros((4, 3, 3, 2)), 0, 13, 1)
    with pytest.raises(ValueError):
        local_contrastive_loss(tf.zeros((3, 8, 8, 2)), 0, 13, 1)
    with pytest.raises(InputError, match="reduction"):
        local_contrastive_loss(f, 0, 13, 1, reduction="sum")
