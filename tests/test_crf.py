"""Tests of pseudolabels.crf (dense-CRF refinement, ORIGINAL_SPEC §4.3) on tiny images."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import InputError
from pseudolabels import crf

# Small, fast parameters: (a_sxy, a_srgb, a_w1, g_sxy, g_w2, n_iter).
ORIGINAL_ACDC = (0.01, 0.5, 10, 10, 30, 30)
NO_PAIRWISE = (1.0, 1.0, 0.0, 1.0, 0.0, 5)


def _probs_from_labels(labels: np.ndarray, num_classes: int, confidence: float) -> np.ndarray:
    """(..., C) probabilities with ``confidence`` on the given label, the rest spread evenly."""
    rest = (1.0 - confidence) / (num_classes - 1)
    probs = np.full(labels.shape + (num_classes,), rest, np.float32)
    np.put_along_axis(probs, labels[..., None].astype(np.int64), confidence, axis=-1)
    return probs


def test_params_validation_and_dict():
    p = crf.CRFParams.from_sequence(ORIGINAL_ACDC)
    assert p.as_dict() == {"a_sxy": 0.01, "a_srgb": 0.5, "a_w1": 10.0, "g_sxy": 10.0, "g_w2": 30.0, "n_iter": 30}
    assert crf.CRFParams.from_sequence(p) is p
    for bad in [(1, 2, 3), (0, 0.5, 10, 10, 30, 30), (0.01, 0.5, -1, 10, 30, 30), (0.01, 0.5, 10, 10, 30, 0),
                (0.01, 0.5, 10, 10, 30, 2.5)]:
        with pytest.raises(InputError, match="crf_params"):
            crf.CRFParams.from_sequence(bad)


def test_without_pairwise_terms_returns_argmax():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(20, 28)).astype(np.float32)  # (H, W, C)
    image = rng.random((20, 28)).astype(np.float32)
    out = crf.crf_slice(probs, image, NO_PAIRWISE)
    assert out.dtype == np.int16 and out.shape == (20, 28)
    np.testing.assert_array_equal(out, probs.argmax(-1))


def test_confident_unary_keeps_its_argmax_with_weak_pairwise():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(32, 32))  # noisy labels: pairwise terms would change them
    probs = _probs_from_labels(labels, 4, 0.999)
    image = rng.random((32, 32)).astype(np.float32)
    out = crf.crf_slice(probs, image, (0.01, 0.5, 0.5, 1.0, 0.5, 5))
    np.testing.assert_array_equal(out, labels)


def test_original_bilateral_term_is_a_self_reinforcement_term():
    # With a_sxy = 0.01 px each pixel is alone in the lattice: Q <- softmax(-U + a_w1 Q).
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), size=(8, 9))  # (H, W, C) float64
    image = rng.random((8, 9))
    for a_w1 in (1.0, 10.0):
        unary = -np.log(np.clip(probs.astype(np.float32).astype(np.float64), 1e-5, None))  # (H, W, C)
        q = np.exp(-unary) / np.exp(-unary).sum(-1, keepdims=True)
        for _ in range(5):
            for y in range(8):
                for x in range(9):
                    logits = [-unary[y, x, c] + a_w1 * q[y, x, c] for c in range(3)]
                    e = np.exp(np.array(logits) - max(logits))
                    q[y, x] = e / e.sum()
        got = crf.crf_posterior(probs, image, (0.01, 0.5, a_w1, 1.0, 0.0, 5))
        np.testing.assert_allclose(got, q, atol=1e-5)


def test_confident_smooth_map_survives_original_weights():
    labels = np.zeros((32, 32), np.int64)
    labels[6:26, 4:24] = 1
    labels[11:21, 9:19] = 2
    probs = _probs_from_labels(labels, 3, 0.999)
    image = labels.astype(np.float32) / 2.0
    out = crf.crf_slice(probs, image, (0.01, 0.5, 10, 3, 30, 5))  # original weights, g_sxy scaled to 32 px
    np.testing.assert_array_equal(out, labels)
    # Without the self-reinforcing bilateral term the Gaussian term erodes the corners.
    eroded = crf.crf_slice(probs, image, (0.01, 0.5, 0, 3, 30, 5))
    assert (eroded != labels).sum() > 0


def test_gaussian_term_removes_isolated_noisy_pixel():
    labels = np.zeros((32, 32), np.int64)
    labels[:, 16:] = 1
    probs = _probs_from_labels(labels, 2, 0.8)
    probs[8, 6] = (0.4, 0.6)  # isolated wrong (weakly) pixel inside the class-0 half
    image = np.zeros((32, 32), np.float32)
    before = crf.crf_slice(probs, image, NO_PAIRWISE)
    assert before[8, 6] == 1  # argmax keeps the noise
    out = crf.crf_slice(probs, image, (0.01, 0.5, 0.0, 3.0, 5.0, 5))  # Gaussian term only
    assert out[8, 6] == 0
    np.testing.assert_array_equal(out, labels)


def test_bilateral_term_follows_grayscale_edge():
    # The image edge is at column 12; the network is unsure and wrong in columns 12..17.
    h, w = 24, 32
    image = np.zeros((h, w), np.float32)
    image[:, 12:] = 1.0
    probs = np.zeros((h, w, 2), np.float32)
    probs[:, :12] = (0.9, 0.1)
    probs[:, 12:18] = (0.55, 0.45)
    probs[:, 18:] = (0.1, 0.9)
    assert (probs.argmax(-1)[:, 12:18] == 0).all()
    out = crf.crf_slice(probs, image, (5.0, 0.1, 10.0, 1.0, 0.0, 10))  # bilateral only
    expected = (np.arange(w)[None, :] >= 12).repeat(h, axis=0).astype(np.int16)
    np.testing.assert_array_equal(out, expected)
    # Without the intensity edge the same pairwise weight does not separate at column 12.
    flat = crf.crf_slice(probs, np.zeros_like(image), (5.0, 0.1, 10.0, 1.0, 0.0, 10))
    assert not np.array_equal(flat, expected)


def test_non_square_slice_matches_transposed_problem():
    rng = np.random.default_rng(2)
    h, w = 20, 36
    labels = np.zeros((h, w), np.int64)
    labels[4:16, 5:30] = 1
    labels[8:12, 12:20] = 2
    noisy = labels.copy()
    flips = rng.random((h, w)) < 0.05
    noisy[flips] = rng.integers(0, 3, size=int(flips.sum()))
    probs = _probs_from_labels(noisy, 3, 0.6)
    image = labels.astype(np.float32)
    params = (1.0, 0.5, 10, 3, 5, 5)
    out = crf.crf_slice(probs, image, params)
    assert out.shape == (h, w)
    # The CRF is symmetric under transposition: the (W, H) problem gives the transposed answer.
    out_t = crf.crf_slice(np.ascontiguousarray(probs.transpose(1, 0, 2)), np.ascontiguousarray(image.T), params)
    np.testing.assert_array_equal(out_t, out.T)
    # And it cleans most of the injected noise.
    assert (out != labels).sum() < (noisy != labels).sum() / 3


def test_zero_probabilities_are_clipped():
    labels = np.zeros((16, 16), np.int64)
    labels[4:12, 4:12] = 1
    probs = np.eye(3, dtype=np.float32)[labels]  # exact one-hot, zeros elsewhere
    out = crf.crf_slice(probs, np.zeros((16, 16), np.float32), (0.01, 0.5, 10, 3, 5, 5))
    np.testing.assert_array_equal(out, labels)


def test_volume_inline_equals_per_slice_and_workers_agree():
    rng = np.random.default_rng(3)
    d, h, w = 3, 24, 32
    probs = rng.dirichlet(np.ones(3), size=(d, h, w)).astype(np.float32)
    image = rng.random((d, h, w)).astype(np.float32)
    params = (0.01, 0.5, 10, 3, 5, 5)
    one = crf.crf_volume(probs, image, params, workers=1)
    assert one.shape == (d, h, w) and one.dtype == np.int16
    for k in range(d):
        np.testing.assert_array_equal(one[k], crf.crf_slice(probs[k], image[k], params))
    two = crf.crf_volume(probs, image, params, workers=2)
    np.testing.assert_array_equal(one, two)
    with crf.make_executor(2) as pool:
        np.testing.assert_array_equal(crf.crf_volume(probs[:1], image[:1], params, executor=pool), one[:1])


def test_shape_errors_and_workers():
    with pytest.raises(ValueError):
        crf.crf_volume(np.zeros((2, 4, 4, 2), np.float32), np.zeros((2, 4, 5), np.float32), NO_PAIRWISE)
    assert crf.crf_volume(np.zeros((0, 4, 4, 2), np.float32), np.zeros((0, 4, 4)), NO_PAIRWISE).shape == (0, 4, 4)
    assert crf.resolve_workers(None) >= 1
    assert crf.resolve_workers(3) == 3
    assert crf.resolve_workers(0) == crf.resolve_workers(None)
    for bad in (-1, 1.5):
        with pytest.raises(InputError, match="workers"):
            crf.resolve_workers(bad)


def test_spatial_stds_convert_via_millimetres():
    p = crf.CRFParams.from_sequence((0.01, 0.5, 10.0, 10.0, 30.0, 30))
    assert p.at_pixel_size((1.36719, 1.36719), (1.36719, 1.36719)) == p  # the originals' own grid: unchanged
    q = p.at_pixel_size((1.36719, 1.36719), (2.5, 2.5))  # ACDC's kernel on the 2.5 mm demo grid
    assert q.g_sxy == pytest.approx(10.0 * 1.36719 / 2.5) == pytest.approx(5.468760)
    assert q.a_sxy == pytest.approx(0.01 * 1.36719 / 2.5)
    assert (q.a_srgb, q.a_w1, q.g_w2, q.n_iter) == (0.5, 10.0, 30.0, 30)  # not spatial: unchanged
    assert p.at_pixel_size((0.625, 0.625), (1.25, 1.25)).g_sxy == pytest.approx(5.0)
    for bad in ((0.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0)):
        with pytest.raises(InputError, match="pixel sizes must be positive mm"):
            p.at_pixel_size((1.0, 1.0), bad)


def test_crf_reference_grid_of_the_configs():
    import configs

    assert configs.get_config("acdc").crf_reference_mm == (1.36719, 1.36719)  # its own grid
    assert configs.get_config("prostate_md").crf_reference_mm == (0.625, 0.625)
    assert configs.get_config("synthetic").crf_reference_mm == (1.36719, 1.36719)  # ACDC's values at 2.5 mm
