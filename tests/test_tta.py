"""Tests of pseudolabels.tta (TTA agreement filter, ORIGINAL_SPEC §4.3 / 9.3.10)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pseudolabels import tta
from pseudolabels.tta import Augmentation


def _smooth_map(d: int, h: int, w: int, channels: int | None = None) -> np.ndarray:
    """Smooth positive test volume (sum of broad Gaussians), optionally with channels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    maps = []
    for k in range(channels or 1):
        cy, cx = h * (0.3 + 0.1 * k), w * (0.6 - 0.05 * k)
        maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.3 * min(h, w)) ** 2)))
    vol = np.stack([np.stack(maps, -1) * (1.0 + 0.2 * z) for z in range(d)])  # (D, H, W, K)
    return (vol if channels else vol[..., 0]).astype(np.float32)


def _interior(h: int, w: int, frac: float = 0.3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) < (frac * min(h, w)) ** 2


@pytest.mark.parametrize(
    "aug", [Augmentation("rotate", 27.3), Augmentation("rotate", -30.0), Augmentation("scale", 0.9),
            Augmentation("scale", 1.07), Augmentation("scale", 1.1), Augmentation("flip")]
)
@pytest.mark.parametrize("channels", [None, 8])
def test_forward_then_inverse_recovers_smooth_map(aug, channels):
    vol = _smooth_map(2, 40, 48, channels)  # non-square; 8 channels as MMWHS (9.3.10)
    fwd = aug.apply(vol)
    assert fwd.shape == vol.shape and fwd.dtype == np.float32
    back = aug.inverse().apply(fwd)
    assert back.shape == vol.shape  # the class axis is never resampled
    mask = _interior(40, 48)
    np.testing.assert_allclose(back[:, mask], vol[:, mask], atol=0.01)
    if aug.kind == "flip":
        np.testing.assert_array_equal(back, vol)
    else:
        assert np.abs(fwd - vol)[:, mask].max() > 0.02  # the forward transform did something


@pytest.mark.parametrize("aug", [Augmentation("rotate", 17.0), Augmentation("scale", 0.9), Augmentation("scale", 1.1)])
def test_inverse_is_exact_on_linear_ramp(aug):
    # Linear interpolation reproduces linear functions, so only an exact inverse recovers a ramp
    # (the originals' approximate 2 - s inverse leaves errors ~0.01 * distance from the centre).
    h, w = 33, 41
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (0.7 * yy + 1.3 * xx + 5.0)[None, :, :, None].repeat(2, axis=-1)  # (1, H, W, 2)
    back = aug.inverse().apply(aug.apply(ramp))
    mask = _interior(h, w, 0.35)
    np.testing.assert_allclose(back[:, mask], ramp[:, mask], atol=2e-3)
    if aug.kind == "scale":
        approx = Augmentation("scale", 2.0 - aug.value).apply(aug.apply(ramp))
        assert np.abs(approx - ramp)[:, mask].max() > 0.05


def test_inverse_values():
    assert Augmentation("rotate", 12.5).inverse() == Augmentation("rotate", -12.5)
    assert Augmentation("scale", 1.1).inverse().value == pytest.approx(1 / 1.1)
    assert Augmentation("flip").inverse() == Augmentation("flip")
    with pytest.raises(ValueError):
        Augmentation("shear", 1.0)
    with pytest.raises(ValueError):
        Augmentation("scale", 0.0)


def test_rotation_matches_scipy_rotate_of_the_originals():
    vol = np.random.default_rng(0).random((2, 17, 23)).astype(np.float32)
    out = Augmentation("rotate", 21.0).apply(vol)
    for k in range(2):
        ref = ndimage.rotate(vol[k], 21.0, axes=(1, 0), reshape=False, order=1, mode="constant", cval=0.0)
        np.testing.assert_allclose(out[k], ref, atol=1e-5)


def test_scale_of_linear_ramp_hand_computed():
    # Linear interpolation is exact on a ramp: out(r, c) = in(centre + (pos - centre) / s).
    h, w, s = 21, 31, 1.25
    ramp = np.tile(np.arange(w, dtype=np.float32), (1, h, 1)) + 100.0  # (1, H, W), value = col + 100
    out = Augmentation("scale", s).apply(ramp)[0]
    cols = np.arange(w, dtype=np.float64)
    expected = (w - 1) / 2 + (cols - (w - 1) / 2) / s + 100.0
    np.testing.assert_allclose(out[h // 2], expected, atol=1e-4)
    # Zooming out leaves 0 outside the field of view.
    assert Augmentation("scale", 0.8).apply(ramp)[0, h // 2, 0] == 0.0


def test_flip_is_left_right():
    vol = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(Augmentation("flip").apply(vol), vol[:, :, ::-1])


def test_sampling_distribution():
    rng = np.random.default_rng(0)
    draws = [tta.sample_augmentation(rng) for _ in range(600)]
    counts = {k: sum(a.kind == k for a in draws) for k in tta.KINDS}
    assert all(150 < c < 250 for c in counts.values()), counts
    angles = [a.value for a in draws if a.kind == "rotate"]
    scales = [a.value for a in draws if a.kind == "scale"]
    assert min(angles) >= -30 and max(angles) <= 30 and max(angles) - min(angles) > 50
    assert min(scales) >= 0.9 and max(scales) <= 1.1
    assert all(round(s, 2) == s for s in scales)
    pairs = [tta.sample_augmentation_pair(rng) for _ in range(300)]
    assert not any(a.kind == "flip" and b.kind == "flip" for a, b in pairs)
    assert any(a.kind == "flip" for a, _ in pairs) and any(b.kind == "flip" for _, b in pairs)


def _f1_reference(a, b, num_classes):
    """Plain-loop float64 reference of the per-class F1 with the NaN rule."""
    out = []
    for c in range(1, num_classes):
        inter = size_a = size_b = 0
        for u, v in zip(np.ravel(a), np.ravel(b)):
            size_a += u == c
            size_b += v == c
            inter += (u == c) and (v == c)
        out.append(float("nan") if size_a + size_b == 0 else 2.0 * inter / (size_a + size_b))
    return np.array(out)


def test_per_class_f1_hand_cases():
    f1 = tta.per_class_f1(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)
    np.testing.assert_allclose(f1[:2], [2 / 3, 2 / 3])
    assert np.isnan(f1[2])  # class 3 absent from both
    assert tta.mean_agreement(f1) == pytest.approx(2 / 3)
    # A class present in one map only scores 0, not NaN.
    f1 = tta.per_class_f1(np.array([0, 1, 1]), np.array([0, 2, 2]), 3)
    np.testing.assert_array_equal(f1, [0.0, 0.0])
    # Both pure background: undefined agreement.
    f1 = tta.per_class_f1(np.zeros(5, int), np.zeros(5, int), 3)
    assert np.isnan(f1).all() and np.isnan(tta.mean_agreement(f1))
    assert not tta.AgreementResult(float("nan"), (float("nan"),) * 2, ()).keep(0.9)
    assert tta.AgreementResult(0.95, (0.95,), ()).keep(0.9)
    assert not tta.AgreementResult(0.9, (0.9,), ()).keep(0.9)  # strictly greater


def test_per_class_f1_matches_loop_reference():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.integers(0, 4, size=(3, 5, 6))
        b = np.where(rng.random(a.shape) < 0.7, a, rng.integers(0, 3, size=a.shape))
        np.testing.assert_allclose(tta.per_class_f1(a, b, 5), _f1_reference(a, b, 5), equal_nan=True)


def _threshold_model(num_classes: int = 3):
    """A perfectly equivariant 'network': soft thresholds of the intensity (pointwise)."""
    centres = np.linspace(0.0, 1.0, num_classes)

    def predict(x: np.ndarray) -> np.ndarray:
        assert x.ndim == 4 and x.shape[-1] == 1 and x.dtype == np.float32
        logits = -40.0 * (x - centres) ** 2  # (N, H, W, C)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    return predict


def _phantom(d: int = 3, h: int = 40, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    img = np.where(r2 < 12**2, 0.5, 0.0) + np.where(r2 < 6**2, 0.5, 0.0)  # ring (1) and disc (2)
    return np.repeat(img[None], d, axis=0).astype(np.float32)  # (D, H, W)


def test_equivariant_model_agrees():
    image = _phantom()
    for seed in range(4):
        res = tta.tta_agreement(_threshold_model(), image, 3, np.random.default_rng(seed))
        assert res.agreement > 0.9, (res, seed)
        assert res.keep(0.9)
        assert len(res.per_class) == 2 and len(res.augmentations) == 2


def test_noise_model_disagrees():
    def noise(x):
        rng = np.random.default_rng(int(x.sum() * 1000) % 2**31)
        return rng.dirichlet(np.ones(3), size=x.shape[:3]).astype(np.float32)

    res = tta.tta_agreement(noise, _phantom(), 3, np.random.default_rng(0))
    assert res.agreement < 0.6 and not res.keep(0.9)


def test_wrong_output_shape_raises():
    with pytest.raises(ValueError, match="predict_fn"):
        tta.tta_agreement(lambda x: np.zeros(x.shape[:3] + (2,), np.float32), _phantom(), 3, np.random.default_rng(0))
