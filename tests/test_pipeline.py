"""Tests of data.pipeline: shapes, determinism, and batch layouts decoded from id-encoding volumes.

Slice ``d`` of volume ``v`` is the constant image ``0.4 + 0.01 * (v * D + d)``, so every row of a
batch can be traced back to its (volume, slice). Crops keep constant images constant and the
intensity views move them by one shared ``delta`` per view batch, so augmented rows decode too.
"""
import numpy as np
import pytest
import tensorflow as tf

from data import pipeline as P
from common.errors import InputError

V, D, HW, C = 5, 9, 16, 4
SMALL_CROP = dict(bbox_dim=8, bbox_dim_y=8, crop_offset_range=(1, 5))


def _volumes(v=V, d=D):
    return [np.stack([np.full((HW, HW), 0.4 + 0.01 * (i * d + j), np.float32) for j in range(d)])
            for i in range(v)]


def _labels(v=V, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, C, (d, HW, HW)).astype(np.int16) for _ in range(v)]


def _decode(rows, d=D):
    """(N, H, W, 1) constant rows -> (volume, slice) pairs; asserts the rows are exact slices."""
    vals = rows.reshape(len(rows), -1)
    ids = np.round((vals[:, 0] - 0.4) / 0.01).astype(int)
    np.testing.assert_allclose(vals, np.broadcast_to((0.4 + 0.01 * ids)[:, None], vals.shape), atol=1e-6)
    return ids // d, ids % d


def _take(ds, n):
    return [tuple(t.numpy() for t in e) if isinstance(e, tuple) else e.numpy() for e in ds.take(n)]


def _check_partition_rows(vols, slices, n_vols, s=4, d=D):
    """Rows S*j + k: one volume per j (distinct), slice in partition k of floor(D/S) slices."""
    vols, slices = vols.reshape(n_vols, s), slices.reshape(n_vols, s)
    assert np.all(vols == vols[:, :1]) and len(set(vols[:, 0])) == n_vols
    part = d // s
    k = np.arange(s)[None, :]
    assert np.all((slices >= k * part) & (slices < (k + 1) * part))


def _delta(aug, orig):
    """The single intensity shift of a view batch of constant images (checks it is shared)."""
    diff = (aug - orig).reshape(len(aug), -1)
    np.testing.assert_allclose(diff, np.full(diff.shape, diff[0, 0]), atol=1e-5)
    assert abs(diff[0, 0]) <= 0.3 + 1e-6
    return diff[0, 0]


# ---------------------------------------------------------------------------------------------
# labeled
# ---------------------------------------------------------------------------------------------
def test_labeled_batches_shapes_soft_labels_and_determinism():
    imgs = [np.random.default_rng(i).random((D, HW, HW)).astype(np.float32) for i in range(3)]
    labs = _labels(3)
    a = _take(P.labeled_batches(imgs, labs, C, batch_size=6, seed=7), 3)
    b = _take(P.labeled_batches(imgs, labs, C, batch_size=6, seed=7), 3)
    c = _take(P.labeled_batches(imgs, labs, C, batch_size=6, seed=8), 1)
    ds = P.labeled_batches(imgs, labs, C, batch_size=6, seed=(7, 1))
    assert ds.element_spec[0].shape == (6, HW, HW, 1) and ds.element_spec[1].shape == (6, HW, HW, C)
    for (x, y), (x2, y2) in zip(a, b):
        assert x.dtype == np.float32 and y.dtype == np.float32
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
        assert y.min() >= -1e-6
        assert set(np.unique(y[0])) <= {0.0, 1.0}  # row 0 always keeps its hard label (no_orig >= 1)
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], _take(ds, 1)[0][0])  # replica seeds give other streams
    assert not np.array_equal(a[0][0], a[1][0])  # successive batches differ
    assert any(np.any((y > 0.01) & (y < 0.99)) for _, y in a)  # deformed rows carry soft labels


def test_labeled_batches_without_augmentation_pair_slices_with_labels():
    vols, labs = _volumes(), _labels()
    seen = set()
    dup = False
    for x, y in _take(P.labeled_batches(vols, labs, C, batch_size=20, seed=1, augment=False, deform=False), 60):
        v, d = _decode(x)
        for i in range(20):
            np.testing.assert_array_equal(y[i], np.eye(C, dtype=np.float32)[labs[v[i]][d[i]]])
        seen |= set(zip(v, d))
        dup |= len(set(zip(v, d))) < 20
    assert len(seen) == V * D and dup  # uniform with replacement over all slices


def test_labeled_batches_affine_only_gives_hard_labels_and_intensity_mixing():
    imgs = [np.random.default_rng(i).random((D, HW, HW)).astype(np.float32) for i in range(2)]
    labs = _labels(2)
    (x, y), = _take(P.labeled_batches(imgs, labs, C, batch_size=8, seed=3, deform=False), 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    (xi, yi), = _take(P.labeled_batches(imgs, labs, C, batch_size=8, seed=3, deform=False, intensity=True), 1)
    np.testing.assert_array_equal(yi, y)  # same draws, labels untouched by intensity
    same = [np.array_equal(xi[i], x[i]) for i in range(8)]
    n_orig = same.index(False)
    assert 1 <= n_orig <= 6 and not any(same[n_orig:])


# ---------------------------------------------------------------------------------------------
# global loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bt_size", [12, 10])
def test_global_exp1_layout(bt_size):
    vols = _volumes()
    plain = _take(P.global_loss_batches(vols, 1, bt_size, 4, seed=5, augment=False, **SMALL_CROP), 15)
    aug = _take(P.global_loss_batches(vols, 1, bt_size, 4, seed=5, **SMALL_CROP), 2)
    used = set()
    for x in plain:
        b = bt_size
        assert x.shape == (3 * b, HW, HW, 1)
        v, d = _decode(x)
        n_vols = -(-b // 4)
        pv = np.concatenate([v[:b], np.full(4 * n_vols - b, -1)])  # pad to whole volumes
        pd = np.concatenate([d[:b], np.zeros(4 * n_vols - b, int)])
        if b % 4 == 0:
            _check_partition_rows(pv, pd, n_vols)
        else:
            assert np.all(v[:b].reshape(-1)[[8, 9]] == v[8]) and len(set(v[:b])) == n_vols
            assert 0 <= d[8] < 2 and 2 <= d[9] < 4
        np.testing.assert_array_equal(x[b:2 * b], x[:b])
        np.testing.assert_array_equal(x[2 * b:], x[:b])
        used |= set(d[:b])
    assert 8 not in used  # the last D mod S slices are never sampled
    for x, xp in zip(aug, plain):
        b = bt_size
        np.testing.assert_array_equal(x[:b], xp[:b])
        d1, d2 = _delta(x[b:2 * b], xp[:b]), _delta(x[2 * b:], xp[:b])
        assert d1 != d2


def test_global_exp2_layout_and_zero_block():
    vols = _volumes()
    b, s = 12, 4
    plain = _take(P.global_loss_batches(vols, 2, b, s, seed=9, augment=False, **SMALL_CROP), 10)
    aug = _take(P.global_loss_batches(vols, 2, b, s, seed=9, **SMALL_CROP), 2)
    bug = _take(P.global_loss_batches(vols, 2, b, s, seed=9, replicate_gd_zero_block=True, **SMALL_CROP), 2)
    sets_differ = False
    for x in plain:
        assert x.shape == (4 * b, HW, HW, 1)
        blocks = x.reshape(b // s, 4, s, HW, HW, 1)  # (block, q, partition, ...)
        np.testing.assert_array_equal(blocks[:, 1], blocks[:, 0])
        np.testing.assert_array_equal(blocks[:, 3], blocks[:, 2])
        v1, d1 = _decode(blocks[:, 0].reshape(-1, HW, HW, 1))
        v2, d2 = _decode(blocks[:, 2].reshape(-1, HW, HW, 1))
        _check_partition_rows(v1, d1, b // s)
        _check_partition_rows(v2, d2, b // s)
        sets_differ |= not np.array_equal(v1, v2)
    assert sets_differ  # the two sets are drawn independently
    for x, xp, xb in zip(aug, plain, bug):
        blocks, bp = x.reshape(b // s, 4, s, HW, HW, 1), xp.reshape(b // s, 4, s, HW, HW, 1)
        np.testing.assert_array_equal(blocks[:, 0], bp[:, 0])
        np.testing.assert_array_equal(blocks[:, 2], bp[:, 2])
        # one intensity draw for all of A1, another for A2 (across blocks)
        assert _delta(blocks[:, 1], bp[:, 0]) != _delta(blocks[:, 3], bp[:, 2])
        np.testing.assert_array_equal(xb[:32], x[:32])
        assert np.all(xb[32:] == 0)
    (x8,) = _take(P.global_loss_batches(vols, 2, 8, 4, seed=1, replicate_gd_zero_block=True, **SMALL_CROP), 1)
    assert x8.shape == (32, HW, HW, 1) and np.all(x8[16:] == 0) and np.all(x8[:16] > 0)


def test_global_exp0_layout():
    vols = _volumes()
    (xp,) = _take(P.global_loss_batches(vols, 0, 6, seed=2, augment=False, **SMALL_CROP), 1)
    (xa,) = _take(P.global_loss_batches(vols, 0, 6, seed=2, **SMALL_CROP), 1)
    assert xp.shape == (12, HW, HW, 1)
    np.testing.assert_array_equal(xp[0::2], xp[1::2])
    _decode(xp)
    assert _delta(xa[0::2], xp[0::2]) != _delta(xa[1::2], xp[1::2])


# ---------------------------------------------------------------------------------------------
# local loss
# ---------------------------------------------------------------------------------------------
def test_local_loss_layouts():
    vols = _volumes()
    (xp,) = _take(P.local_loss_batches(vols, 0, bt_size=10, seed=4, augment=False), 1)
    (xa,) = _take(P.local_loss_batches(vols, 0, bt_size=10, seed=4), 1)
    assert xp.shape == (20, HW, HW, 1)
    np.testing.assert_array_equal(xp[0::2], xp[1::2])
    _decode(xp)
    assert _delta(xa[0::2], xp[0::2]) != _delta(xa[1::2], xp[1::2])
    for xp, xa in zip(_take(P.local_loss_batches(vols, 1, seed=6, augment=False), 5),
                      _take(P.local_loss_batches(vols, 1, bt_size=99, seed=6), 5)):
        assert xp.shape == (24, HW, HW, 1) and xa.shape == (24, HW, HW, 1)
        np.testing.assert_array_equal(xp[12:], xp[:12])
        v, d = _decode(xp[:12])
        _check_partition_rows(v, d, 3)
        assert _delta(xa[:12], xp[:12]) != _delta(xa[12:], xp[:12])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_bad_inputs_raise_input_error():
    vols, labs = _volumes(), _labels()
    bad_labels = [lab.copy() for lab in labs]
    bad_labels[2][0, 0, 0] = C
    nan_vols = [v.copy() for v in vols]
    nan_vols[1][3, 2, 2] = np.nan
    cases = [
        lambda: P.labeled_batches(vols, bad_labels, C),
        lambda: P.labeled_batches(vols, labs[:4], C),
        lambda: P.labeled_batches(vols, [lab[:, :8] for lab in labs], C),
        lambda: P.labeled_batches(nan_vols, labs, C),
        lambda: P.labeled_batches([], [], C),
        lambda: P.unlabeled_slices([vols[0], vols[1][:, :8]], 4),
        lambda: P.unlabeled_slices([vols[0][0]], 4),
        lambda: P.global_loss_batches(vols, 3, **SMALL_CROP),
        lambda: P.global_loss_batches(vols, 2, bt_size=10, **SMALL_CROP),
        lambda: P.global_loss_batches(vols[:2], 2, bt_size=12, **SMALL_CROP),
        lambda: P.global_loss_batches([v[:3] for v in vols], 1, **SMALL_CROP),
        lambda: P.global_loss_batches(vols, 1),  # default 100-pixel crops on 16x16 images
        lambda: P.local_loss_batches(vols[:2], 1),
        lambda: P.local_loss_batches(vols, 2),
        lambda: P.labeled_batches(vols, labs, C, seed=(1, 2, 3)),
    ]
    for i, case in enumerate(cases):
        with pytest.raises(InputError):
            case()
            pytest.fail(f"case {i} did not raise")


def test_unlabeled_slices():
    vols = _volumes()
    a = _take(P.unlabeled_slices(vols, 7, seed=3), 2)
    b = _take(P.unlabeled_slices(vols, 7, seed=3), 2)
    for x, x2 in zip(a, b):
        assert x.shape == (7, HW, HW, 1) and x.dtype == np.float32
        np.testing.assert_array_equal(x, x2)
        _decode(x)


def test_partition_indices_cover_all_partitions():
    starts, lengths = tf.constant([0, 9, 18], tf.int32), tf.constant([9, 9, 10], tf.int32)
    seen = set()
    for i in range(60):
        idx = P.partition_indices(tf.constant([i, 1], tf.int64), starts, lengths, 3, 4).numpy()
        vol = np.searchsorted([0, 9, 18], idx, side="right") - 1
        assert np.all(vol.reshape(3, 4) == vol.reshape(3, 4)[:, :1]) and len(set(vol)) == 3
        seen |= set(idx.tolist())
    expected = set(range(0, 8)) | set(range(9, 17)) | set(range(18, 26))
    assert seen == expected
    assert tf.reduce_all(tf.equal(idx, P.partition_indices(tf.constant([59, 1], tf.int64), starts, lengths, 3, 4)))
