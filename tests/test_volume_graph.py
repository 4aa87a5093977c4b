"""evaluation.volume_graph: predict.py's preprocessing, inverse mapping and segmentation as TF ops,
compared with NumPy / scikit-image (the code predict.py runs) and hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.transform
import tensorflow as tf

import configs
from data import geometry
from data.volume_prep import preprocess_volume
from evaluation import volume_graph as vg
from evaluation.inference import keras_predictor
from evaluation.segment import segment_volume
from tests import _eval_data as ed

CFG = configs.get_config("synthetic")  # 64 x 64 at 2.5 mm
# (H0, W0, D), in-plane spacing: pad both axes, tiny, crop H / pad W at the target resolution,
# crop both with one slice, pad H / crop W with more slices than a chunk of 20
CASES = [((50, 56, 3), (3.0, 2.8)), ((45, 52, 2), (1.3, 1.9)), ((97, 33, 4), (2.5, 2.5)),
         ((140, 120, 1), (1.6, 1.45)), ((61, 75, 23), (2.0, 2.2))]


@pytest.mark.parametrize("n", [1, 2, 3, 101, 1000])
def test_percentile_matches_numpy_exactly(n):
    rng = np.random.default_rng(n)
    values = np.round(rng.gamma(2.0, 100.0, n), 1)  # ties included
    srt = tf.sort(tf.constant(values, tf.float64))
    for q in (1.0, 50.0, 99.0, 100.0):
        assert float(vg.percentile_linear(srt, q)) == float(np.percentile(values, q))


def test_percentile_hand_computed():
    srt = tf.constant([0.0, 10.0, 20.0, 30.0, 40.0], tf.float64)  # index (n - 1) q / 100 = 0.04 q
    assert float(vg.percentile_linear(srt, 1.0)) == pytest.approx(0.4)
    assert float(vg.percentile_linear(srt, 99.0)) == pytest.approx(39.6)


def test_resize_matrix_hand_computed_and_against_skimage():
    # upsample 2 -> 4: coordinates -0.25, 0.25, 0.75, 1.25; the neighbours -1 and 2 are 0 (constant)
    np.testing.assert_allclose(vg.resize_matrix(4, 2).numpy(),
                               [[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75]])
    # downsample 4 -> 2: coordinates 0.5, 2.5
    np.testing.assert_allclose(vg.resize_matrix(2, 4).numpy(), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_array_equal(vg.resize_matrix(5, 5).numpy(), np.eye(5))
    rng = np.random.default_rng(0)
    for n_in, n_out in [(7, 3), (3, 7), (50, 61), (64, 23), (1, 4), (4, 1)]:
        x = rng.normal(size=(n_in, 5))
        ref = skimage.transform.resize(x, (n_out, 5), order=1, mode="constant", cval=0.0, clip=False,
                                       preserve_range=True, anti_aliasing=False)
        np.testing.assert_allclose(vg.resize_matrix(n_out, n_in).numpy() @ x, ref, atol=1e-12)


@pytest.mark.parametrize("n_in", [5, 8, 9, 12, 13])
def test_crop_pad_matrix_is_geometry_crop_or_pad(n_in):
    x = np.arange(1.0, n_in + 1)
    m = vg.crop_pad_matrix(8, n_in).numpy()  # (8, n_in)
    np.testing.assert_array_equal(m @ x, geometry.crop_or_pad(x[:, None], (8, 1))[:, 0])
    y = np.arange(1.0, 9.0)
    np.testing.assert_array_equal(m.T @ y, geometry.uncrop_or_unpad(y[:, None], (n_in, 1))[:, 0])


def test_clip_like_skimage():
    inp = tf.constant([[0.2, 0.9]], tf.float64)
    out = tf.constant([[0.1, 1.0]], tf.float64)  # outside [0.2, 0.9], 0 not in the output range
    np.testing.assert_allclose(vg.clip_like_skimage(out, inp, [0, 1]).numpy(), [[0.2, 0.9]])
    out0 = tf.constant([[0.0, 0.5]], tf.float64)  # cval 0 produced by the constant mode is kept
    np.testing.assert_allclose(vg.clip_like_skimage(out0, inp, [0, 1]).numpy(), [[0.0, 0.5]])


@pytest.mark.parametrize("shape,spacing", CASES)
def test_preprocess_and_inverse_match_numpy(shape, spacing):
    rng = np.random.default_rng(shape[0])
    image = rng.gamma(2.0, 100.0, shape).astype(np.float32)  # (H0, W0, D)
    ref, _, meta = preprocess_volume(image, spacing + (6.0,), CFG)  # (D, 64, 64)
    x, geo = vg.preprocess(tf.constant(np.transpose(image, (2, 0, 1))), tf.constant(spacing, tf.float32),
                           CFG.image_size, CFG.target_resolution)
    assert [int(geo["rescaled_h"]), int(geo["rescaled_w"])] == meta["rescaled_shape"]
    # same float64 formulas, other summation order: at most one float32 ulp apart
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-6)
    probs = rng.dirichlet(np.ones(4), size=ref.shape[:3]).astype(np.float32)  # (D, 64, 64, 4)
    native_ref = geometry.probabilities_to_native(probs, meta)  # (H0, W0, D, 4)
    native = vg.probabilities_to_native(tf.constant(probs), geo).numpy()  # (D, H0, W0, 4)
    np.testing.assert_allclose(np.transpose(native, (1, 2, 0, 3)), native_ref, atol=1e-6)
    np.testing.assert_array_equal(np.argmax(np.transpose(native, (1, 2, 0, 3)).astype(np.float32), -1),
                                  geometry.labels_to_native(probs, meta))


@pytest.fixture(scope="module")
def unet():
    return ed.random_unet(2, num_classes=4)


def test_segment_volume_equals_predict_pipeline(unet):
    fn = vg.make_segment_volume(unet, CFG.image_size, CFG.target_resolution)
    predictor = keras_predictor(unet)
    total = same = 0
    for k, (shape, spacing) in enumerate(CASES):
        image, _, _ = ed.raw_volume(k, shape=shape, spacing=spacing + (8.0,))
        image = image * 700.0 + np.random.default_rng(k).normal(60.0, 15.0, shape).astype(np.float32)
        ref = segment_volume(predictor, CFG, image, spacing + (8.0,))  # (H0, W0, D), predict.py's code
        out = fn(tf.constant(np.transpose(image, (2, 0, 1))), tf.constant(spacing, tf.float32))
        labels = np.transpose(out["labels"].numpy(), (1, 2, 0))
        probs = out["probabilities"].numpy()
        assert labels.shape == shape and out["labels"].dtype == tf.int32
        assert probs.shape == (shape[2], shape[0], shape[1], 4) and probs.dtype == np.float32
        total += labels.size
        same += int((labels == ref).sum())
    assert len(np.unique(labels)) > 1
    print(f"segment_volume vs predict.py pipeline: {same}/{total} voxels agree")
    assert same / total >= 0.999, (same, total)


def test_segment_volume_input_errors(unet):
    fn = vg.make_segment_volume(unet, CFG.image_size, CFG.target_resolution)
    ok = tf.constant(np.random.default_rng(0).normal(size=(2, 40, 40)), tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="constant"):
        fn(tf.fill([2, 40, 40], 7.0), tf.constant([2.0, 2.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        fn(tf.tensor_scatter_nd_update(ok, [[0, 1, 1]], [np.nan]), tf.constant([2.0, 2.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        fn(ok, tf.constant([2.0, 0.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        fn(tf.zeros([0, 40, 40]), tf.constant([2.0, 2.0]))
