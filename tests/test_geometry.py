"""data.geometry: crop/pad formulas and the inverse mapping to the native grid (ORIGINAL_SPEC §6.1)."""
import numpy as np
import pytest

from _data_helpers import blob_volume
from configs.base import DatasetConfig
from data import geometry
from common.errors import InputError
from data.volume_prep import preprocess_volume


def _cfg(size, res):
    return DatasetConfig(name="t", image_size=size, target_resolution=res, num_classes=4,
                         struct_names=("a", "b", "c"), class_weights=(0.1, 0.3, 0.3, 0.3), min_seg_classes=3,
                         crf_params=(0.01, 0.5, 10, 10, 30, 30), unlabeled_pool=("trall", "c1"))


def _onehot(label, c):  # (D, H, W) -> (D, H, W, C)
    return np.eye(c, dtype=np.float32)[label]


def test_crop_and_pad_offsets_by_hand():
    a = np.arange(7 * 3).reshape(7, 3)
    out = geometry.crop_or_pad(a, (4, 6))  # x: crop 7 -> 4, start (7-4)//2 = 1; y: pad 3 -> 6, offset (6-3)//2 = 1
    expected = np.zeros((4, 6), a.dtype)
    expected[:, 1:4] = a[1:5, :]
    np.testing.assert_array_equal(out, expected)
    assert geometry.crop_pad_offsets((7, 3), (4, 6)) == [{"mode": "crop", "start": 1}, {"mode": "pad", "offset": 1}]
    back = geometry.uncrop_or_unpad(out, (7, 3))
    expected_back = np.zeros_like(a)
    expected_back[1:5] = a[1:5]
    np.testing.assert_array_equal(back, expected_back)
    # odd differences: crop 8 -> 5 starts at 1, pad 2 -> 5 at offset 1
    assert geometry.crop_pad_offsets((8, 2), (5, 5)) == [{"mode": "crop", "start": 1}, {"mode": "pad", "offset": 1}]


def test_exact_round_trip_when_spacing_equals_target():
    img, lab = blob_volume((30, 26, 4))
    for size in ((36, 32), (30, 26)):  # pad only / identity
        _, lab_p, meta = preprocess_volume(img, (2.0, 2.0, 7.0), _cfg(size, (2.0, 2.0)), lab)
        assert meta["rescaled_shape"] == [30, 26]
        native = geometry.labels_to_native(_onehot(lab_p, 4), meta)
        np.testing.assert_array_equal(native, lab)
        probs = geometry.probabilities_to_native(_onehot(lab_p, 4), meta)
        assert probs.shape == (30, 26, 4, 4) and probs.dtype == np.float32
        np.testing.assert_array_equal(probs, np.eye(4, dtype=np.float32)[lab])


def test_crop_without_resampling_is_exact_inside_and_background_outside():
    img, lab = blob_volume((30, 26, 2))
    _, lab_p, meta = preprocess_volume(img, (2.0, 2.0, 7.0), _cfg((24, 26), (2.0, 2.0)), lab)
    probs = geometry.probabilities_to_native(_onehot(lab_p, 4), meta)
    assert np.all(probs[:3] == 0) and np.all(probs[27:] == 0)  # cropped rows: zero probabilities
    native = geometry.labels_to_native(_onehot(lab_p, 4), meta)
    np.testing.assert_array_equal(native[3:27], lab[3:27])
    assert np.all(native[:3] == 0)


@pytest.mark.parametrize("spacing,size", [((1.3, 1.1, 8.0), (40, 40)), ((2.6, 3.1, 5.0), (96, 96))])
def test_round_trip_with_resampling_and_crop_pad(spacing, size):
    img, lab = blob_volume((90, 76, 3))
    _, lab_p, meta = preprocess_volume(img, spacing, _cfg(size, (2.0, 2.0)), lab)
    native = geometry.labels_to_native(_onehot(lab_p, 4), meta)
    assert native.shape == lab.shape and native.dtype == np.int16
    for c in range(1, 4):
        inter = np.sum((native == c) & (lab == c))
        dice = 2 * inter / (np.sum(native == c) + np.sum(lab == c))
        assert dice > 0.95, (c, dice)


def test_probability_resize_is_linear_by_hand():
    # 2 x 1 rescaled grid upsampled to 4 x 1 native: linear interpolation with half-pixel centres
    meta = {"native_shape": [4, 1, 1], "rescaled_shape": [2, 1], "image_size": [2, 1]}
    probs = np.zeros((1, 2, 1, 2), np.float32)
    probs[0, :, 0, 1] = [0.0, 1.0]
    probs[0, :, 0, 0] = [1.0, 0.0]
    out = geometry.probabilities_to_native(probs, meta)[:, 0, 0, :]
    # native i samples rescaled coordinate (i + 0.5) / 2 - 0.5; mode='constant' (as the originals)
    # blends the outermost half pixel with 0 for every class alike, so the argmax is unchanged
    np.testing.assert_allclose(out[:, 1], [0.0, 0.25, 0.75, 0.75])
    np.testing.assert_allclose(out[:, 0], [0.75, 0.75, 0.25, 0.0])
    np.testing.assert_array_equal(np.argmax(out, -1), [0, 0, 1, 1])


def test_bad_meta_and_shapes():
    with pytest.raises(InputError, match="meta.json"):
        geometry.probabilities_to_native(np.zeros((1, 2, 2, 2)), {"native_shape": [2, 2, 1]})
    meta = {"native_shape": [4, 4, 2], "rescaled_shape": [4, 4], "image_size": [4, 4]}
    with pytest.raises(InputError, match="does not match"):
        geometry.probabilities_to_native(np.zeros((3, 4, 4, 2)), meta)
