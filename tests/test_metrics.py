"""Tests of evaluation.metrics against hand-computed cases, brute force NumPy references and medpy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from common.errors import InputError
from evaluation import metrics


def _dice_reference(gt, pred, num_classes):
    """Plain-loop float64 Dice per class with the NaN rule (both absent -> NaN)."""
    out = []
    for c in range(num_classes):
        inter = n_g = n_p = 0
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            inter += (g == c) and (p == c)
            n_g += g == c
            n_p += p == c
        out.append(float("nan") if n_g + n_p == 0 else 2.0 * inter / (n_g + n_p))
    return np.array(out)


def _surface_reference(mask):
    """Voxels of ``mask`` with a face neighbour outside the mask or outside the volume (loops)."""
    out = np.zeros_like(mask)
    shape = mask.shape
    for idx in zip(*np.nonzero(mask)):
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            nb = list(idx)
            nb[axis] += step
            if not 0 <= nb[axis] < shape[axis] or not mask[tuple(nb)]:
                out[idx] = True
                break
    return out


def _directed_reference(a, b, spacing):
    """Brute-force distances from each surface voxel of a to the nearest surface voxel of b."""
    pa = np.argwhere(_surface_reference(a)).astype(np.float64) * spacing  # (Na, 3)
    pb = np.argwhere(_surface_reference(b)).astype(np.float64) * spacing  # (Nb, 3)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))  # (Na, Nb)
    return d.min(axis=1)


def _blobs(shape, seed, threshold=0.6, sigma=1.5):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, threshold)


# ---------------------------------------------------------------- Dice


def test_dice_hand_computed():
    gt = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 2, 2], [1, 0, 1, 0]])
    d = metrics.dice_per_class(gt, pred, 4)
    # class 0: gt 3, pred 3, both 2 -> 4/6; class 1: gt 3, pred 3, both 2 -> 4/6;
    # class 2: gt 2, pred 2, both 1 -> 0.5; class 3: absent from both -> NaN
    np.testing.assert_allclose(d[:3], [4 / 6, 4 / 6, 0.5])
    assert np.isnan(d[3])


def test_dice_absent_rules():
    gt = np.zeros((3, 4, 2), np.int16)
    pred = np.zeros((3, 4, 2), np.int16)
    pred[0, 0, 0] = 1  # predicted but absent from GT -> 0
    gt[1, 1, 1] = 2  # present in GT but missed -> 0
    d = metrics.dice_per_class(gt, pred, 4)
    assert d[1] == 0.0 and d[2] == 0.0
    assert np.isnan(d[3])  # absent from both -> NaN
    assert metrics.foreground_mean(d) == 0.0  # NaN excluded from the mean


def test_dice_matches_loop_reference():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(5, 6, 3))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 3, size=gt.shape))
    np.testing.assert_allclose(metrics.dice_per_class(gt, pred, 5), _dice_reference(gt, pred, 5))


def test_dice_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        metrics.dice_per_class(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def test_dice_labels_outside_class_range_raise():
    gt = np.array([[0, 205], [420, 0]])  # raw MM-WHS values would be dropped by a truncated bincount
    with pytest.raises(ValueError, match="ground truth labels span 0..420"):
        metrics.dice_per_class(gt, np.zeros_like(gt), 8)
    with pytest.raises(ValueError, match="prediction labels span -1..0"):
        metrics.dice_per_class(np.zeros((2, 2)), -np.eye(2), 2)


# ---------------------------------------------------------------- surface distances, analytic


def test_parallel_planes_anisotropic():
    spacing = (0.7, 1.3, 5.0)
    a = np.zeros((8, 8, 6), bool)
    b = np.zeros((8, 8, 6), bool)
    a[:, :, 1] = True
    b[:, :, 4] = True  # 3 slices apart along z -> 15 mm everywhere
    assert metrics.hd95(a, b, spacing) == pytest.approx(15.0)
    assert metrics.assd(a, b, spacing) == pytest.approx(15.0)
    assert metrics.hd95(a, b) == pytest.approx(3.0)  # voxels
    a = np.zeros((8, 8, 6), bool)
    b = np.zeros((8, 8, 6), bool)
    a[2] = True
    b[4] = True  # 2 rows apart along x -> 1.4 mm
    assert metrics.hd95(a, b, spacing) == pytest.approx(1.4)
    assert metrics.assd(a, b, spacing) == pytest.approx(1.4)


def test_plane_against_two_planes():
    # A = plane z=1 (N voxels), B = planes z=1 and z=5: d(A->B) = N zeros, d(B->A) = N zeros and
    # N values 4*sz. ASSD = 4*sz/3; HD95: index 0.95*(3N-1) = 181.45 > 2N-1 = 127 -> 4*sz.
    sz = 2.5
    a = np.zeros((8, 8, 7), bool)
    a[:, :, 1] = True
    b = a.copy()
    b[:, :, 5] = True
    assert metrics.assd(a, b, (1.0, 1.0, sz)) == pytest.approx(4 * sz / 3)
    assert metrics.hd95(a, b, (1.0, 1.0, sz)) == pytest.approx(4 * sz)


def test_identical_masks_zero():
    a = _blobs((12, 12, 5), 3)
    assert metrics.hd95(a, a, (1.0, 2.0, 3.0)) == 0.0
    assert metrics.assd(a, a, (1.0, 2.0, 3.0)) == 0.0


def test_empty_mask_rules():
    e = np.zeros((5, 5, 3), bool)
    f = e.copy()
    f[2, 2, 1] = True
    assert np.isnan(metrics.hd95(e, e, (1, 1, 1)))
    assert np.isnan(metrics.assd(e, e, (1, 1, 1)))
    assert metrics.hd95(e, f, (1, 1, 1)) == np.inf
    assert metrics.hd95(f, e, (1, 1, 1)) == np.inf
    assert metrics.assd(f, e, (1, 1, 1)) == np.inf
    with pytest.raises(ValueError):
        metrics.surface_distances(e, f)


def test_hd95_pooled_vs_max_directed_hand_computed():
    # A = one voxel at z=0, B = voxels at z=0 and z=10 (isolated voxels are their own surface),
    # spacing 2 mm along z: d(A->B) = [0], d(B->A) = [0, 20].
    # pooled: P95([0, 0, 20]) = 0 + 0.95*2 - 1 = 0.9 of the way from 0 to 20 = 18
    # max_directed (MONAI): max(P95([0]), P95([0, 20])) = max(0, 0.95 * 20) = 19
    a = np.zeros((1, 1, 11), bool)
    b = np.zeros((1, 1, 11), bool)
    a[0, 0, 0] = True
    b[0, 0, [0, 10]] = True
    spacing = (1.0, 1.0, 2.0)
    for x, y in ((a, b), (b, a)):  # both definitions are symmetric
        assert metrics.hd95(x, y, spacing) == pytest.approx(18.0)
        assert metrics.hd95(x, y, spacing, method="pooled") == pytest.approx(18.0)
        assert metrics.hd95(x, y, spacing, method="max_directed") == pytest.approx(19.0)
    # same distribution in both directions (parallel planes): the two definitions agree
    p = np.zeros((6, 6, 5), bool)
    q = np.zeros((6, 6, 5), bool)
    p[:, :, 1] = True
    q[:, :, 3] = True
    assert metrics.hd95(p, q, spacing, method="max_directed") == pytest.approx(metrics.hd95(p, q, spacing))


def test_hd95_max_directed_matches_brute_force_and_empty_rules():
    spacing = np.array([0.9, 1.6, 4.0])
    a = _blobs((14, 13, 6), 3)
    b = _blobs((14, 13, 6), 13, threshold=0.8)
    d_ab, d_ba = _directed_reference(a, b, spacing), _directed_reference(b, a, spacing)
    expected = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert metrics.hd95(a, b, spacing, method="max_directed") == pytest.approx(expected)
    assert metrics.hd95(a, b, spacing) == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    e = np.zeros_like(a)
    assert np.isnan(metrics.hd95(e, e, spacing, method="max_directed"))
    assert metrics.hd95(a, e, spacing, method="max_directed") == np.inf
    with pytest.raises(InputError, match="HD95 method must be one of pooled, max_directed, got 'monai'"):
        metrics.hd95(a, b, spacing, method="monai")


# ---------------------------------------------------------------- brute force and medpy


@pytest.mark.parametrize("seed", [0, 1])
def test_surface_distances_match_brute_force(seed):
    spacing = np.array([0.9, 1.6, 4.0])
    a = _blobs((14, 13, 6), seed)
    b = _blobs((14, 13, 6), seed + 10)
    d_ab, d_ba = metrics.surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(d_ab), np.sort(_directed_reference(a, b, spacing)), atol=1e-9)
    np.testing.assert_allclose(np.sort(d_ba), np.sort(_directed_reference(b, a, spacing)), atol=1e-9)


def test_shifted_boxes_match_brute_force():
    spacing = np.array([1.25, 1.25, 10.0])
    a = np.zeros((20, 20, 8), bool)
    b = np.zeros((20, 20, 8), bool)
    a[4:12, 5:13, 2:5] = True
    b[7:15, 5:13, 3:7] = True
    both = np.concatenate([_directed_reference(a, b, spacing), _directed_reference(b, a, spacing)])
    assert metrics.hd95(a, b, spacing) == pytest.approx(np.percentile(both, 95))
    assert metrics.assd(a, b, spacing) == pytest.approx(both.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_medpy(seed):
    from medpy.metric import binary as medpy_binary  # test-only dependency (requirements.txt)

    spacing = (0.8, 1.1, 6.5)
    a = _blobs((40, 36, 9), seed)  # blobs touch the volume border
    b = _blobs((40, 36, 9), seed + 100, threshold=0.55)
    assert metrics.hd95(a, b, spacing) == pytest.approx(medpy_binary.hd95(a, b, voxelspacing=spacing))
    assert metrics.assd(a, b, spacing) == pytest.approx(medpy_binary.assd(a, b, voxelspacing=spacing))
    assert metrics.hd95(a, b) == pytest.approx(medpy_binary.hd95(a, b))


def test_crop_does_not_change_distances():
    spacing = (1.0, 1.5, 3.0)
    a = np.zeros((60, 60, 10), bool)
    b = np.zeros((60, 60, 10), bool)
    a[20:30, 22:31, 3:6] = True
    b[24:33, 20:29, 4:8] = True
    d_ab, d_ba = metrics.surface_distances(a, b, spacing)
    sa, sb = _surface_reference(a), _surface_reference(b)
    full_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    full_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    np.testing.assert_allclose(np.sort(d_ab), np.sort(full_ab))
    np.testing.assert_allclose(np.sort(d_ba), np.sort(full_ba))


# ---------------------------------------------------------------- volume_metrics


def test_volume_metrics_multiclass():
    spacing = (1.2, 0.9, 5.0)
    gt = np.zeros((24, 22, 6), np.int16)
    pred = np.zeros_like(gt)
    gt[3:10, 4:12, 1:4] = 1
    pred[4:11, 4:12, 1:5] = 1
    gt[14:20, 10:18, 2:5] = 2
    pred[0, 0, 0] = 3  # class 3 predicted, absent from GT; class 2 missed
    m = metrics.volume_metrics(gt, pred, 5, spacing)
    np.testing.assert_allclose(m.dice, _dice_reference(gt, pred, 5))
    assert np.isnan(m.hd95_mm[0])  # background not scored
    assert m.hd95_mm[1] == pytest.approx(metrics.hd95(gt == 1, pred == 1, spacing))
    assert m.assd_mm[1] == pytest.approx(metrics.assd(gt == 1, pred == 1, spacing))
    assert m.hd95_vox[1] == pytest.approx(metrics.hd95(gt == 1, pred == 1))
    d_ab = _directed_reference(gt == 1, pred == 1, np.asarray(spacing))
    d_ba = _directed_reference(pred == 1, gt == 1, np.asarray(spacing))
    assert m.hd95_mm[1] == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    assert m.hd95_max_mm[1] == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    assert m.hd95_max_vox[1] == pytest.approx(metrics.hd95(gt == 1, pred == 1, method="max_directed"))
    for name in ("hd95_mm", "hd95_max_mm", "assd_mm", "hd95_vox", "hd95_max_vox", "assd_vox"):
        values = getattr(m, name)
        assert np.isnan(values[0]), name  # background not scored
        assert values[2] == np.inf and values[3] == np.inf, name  # missed / hallucinated
        assert np.isnan(values[4]), name  # absent from both
    assert np.isnan(m.dice[4])
    assert metrics.foreground_mean(m.hd95_mm, finite_only=True) == pytest.approx(m.hd95_mm[1])
    fast = metrics.volume_metrics(gt, pred, 5, spacing, surface=False)
    np.testing.assert_array_equal(fast.dice, m.dice)
    assert all(np.all(np.isnan(getattr(fast, name))) for name in metrics.METRIC_NAMES[1:])


def test_volume_metrics_both_hd95_hand_computed():
    # Class 1 lies on one column (x=1, y=1) of a 3 x 3 x 7 volume, so every voxel is its own surface
    # and all distances run along z: GT A = z {0, 1, 2}, prediction B = z {0, 6}.
    #   d(A->B) = [0, 1, 2] slices, d(B->A) = [0, 4] slices.
    #   pooled  P95([0, 0, 1, 2, 4]): position 0.95*4 = 3.8 -> 2 + 0.8*(4-2) = 3.6 slices
    #   MONAI   max(P95([0, 1, 2]), P95([0, 4])) = max(1 + 0.9*1, 0 + 0.95*4) = max(1.9, 3.8) = 3.8 slices
    #   ASSD    (0+1+2+0+4)/5 = 1.4 slices
    # With 2.5 mm slices: 9.0, 9.5 and 3.5 mm. Class 2 is missed (inf), class 3 absent from both (NaN).
    gt = np.zeros((3, 3, 7), np.int16)
    pred = np.zeros_like(gt)
    gt[1, 1, [0, 1, 2]] = 1
    pred[1, 1, [0, 6]] = 1
    gt[0, 0, 4] = 2
    m = metrics.volume_metrics(gt, pred, 4, (0.7, 0.9, 2.5))
    assert m.hd95_mm[1] == pytest.approx(9.0) and m.hd95_max_mm[1] == pytest.approx(9.5)
    assert m.hd95_vox[1] == pytest.approx(3.6) and m.hd95_max_vox[1] == pytest.approx(3.8)
    assert m.assd_mm[1] == pytest.approx(3.5) and m.assd_vox[1] == pytest.approx(1.4)
    assert m.hd95_mm[2] == m.hd95_max_mm[2] == m.hd95_max_vox[2] == np.inf
    assert np.isnan(m.hd95_max_mm[3]) and np.isnan(m.hd95_max_vox[3]) and np.isnan(m.hd95_max_mm[0])
    vox_only = metrics.volume_metrics(gt, pred, 4, None)  # unknown spacing: both mm columns NaN
    assert np.all(np.isnan(vox_only.hd95_mm)) and np.all(np.isnan(vox_only.hd95_max_mm))
    assert vox_only.hd95_vox[1] == pytest.approx(3.6) and vox_only.hd95_max_vox[1] == pytest.approx(3.8)
    # the metrics module agrees with the standalone function of each definition
    assert metrics.hd95(gt == 1, pred == 1, (0.7, 0.9, 2.5), method="max_directed") == pytest.approx(9.5)
    assert metrics.hd95(gt == 1, pred == 1, (0.7, 0.9, 2.5)) == pytest.approx(9.0)


def test_volume_metrics_one_distance_pass_per_unit(monkeypatch):
    """Both HD95 definitions and ASSD come from one pair of distance transforms per structure and unit."""
    calls = []
    edt = ndimage.distance_transform_edt

    def counting(*args, **kwargs):
        calls.append(kwargs.get("sampling"))
        return edt(*args, **kwargs)

    monkeypatch.setattr(metrics.ndimage, "distance_transform_edt", counting)
    gt = np.zeros((10, 9, 4), np.int16)
    pred = np.zeros_like(gt)
    gt[2:6, 2:7, 1:3] = 1
    pred[3:7, 2:6, 1:4] = 1
    gt[8, 8, 0] = 2  # missed: inf by rule, no distance transform
    m = metrics.volume_metrics(gt, pred, 4, (1.0, 1.5, 4.0))
    assert len(calls) == 4  # class 1 only: (S(B), S(A)) in mm, then in voxels
    assert m.hd95_max_mm[1] > 0 and m.hd95_max_vox[1] > 0
    calls.clear()
    metrics.volume_metrics(gt, pred, 4, None)
    assert len(calls) == 2


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 2.0)])
def test_volume_metrics_bad_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        metrics.volume_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), 2, spacing)
