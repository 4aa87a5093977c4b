"""Tests for models.heads: g1, g2 (+ region projection) and h shapes, names, counts, init."""
import numpy as np
import pytest

from _model_helpers import count_params
from models.heads import build_g1, build_g2, build_h, build_region_projection
from models.unet import DECODER_BLOCK_CHANNELS, ENCODER_OUTPUT, build_unet, endpoints_model


def test_g1_shapes_counts_names():
    g1 = build_g1((6, 6, 128))
    z = g1(np.ones((3, 6, 6, 128), np.float32))
    assert tuple(z.shape) == (3, 128)
    assert count_params(g1) == 4608 * 1024 + 1024 * 128
    assert all(v.path.startswith("reg_") for v in g1.weights)
    assert g1.get_layer("reg_nn1").use_bias is False and g1.get_layer("reg_pred").use_bias is False
    assert count_params(build_g1((5, 5, 128))) == 3200 * 1024 + 1024 * 128
    with pytest.raises(ValueError):
        build_g1((None, None, 128))


def test_g1_relu_and_glorot_init():
    g1 = build_g1((2, 2, 8))
    x = np.random.default_rng(0).normal(size=(4, 2, 2, 8)).astype(np.float32)
    w1 = g1.get_layer("reg_nn1").kernel.numpy()
    w2 = g1.get_layer("reg_pred").kernel.numpy()
    ref = np.maximum(x.reshape(4, -1) @ w1, 0) @ w2
    np.testing.assert_allclose(g1(x), ref, rtol=1e-4, atol=1e-4)
    limit = np.sqrt(6.0 / (32 + 1024))
    assert np.abs(w1).max() <= limit and np.abs(w1).max() > 0.9 * limit


def test_g1_on_encoder_output():
    unet = build_unet(4, (64, 64))
    enc = endpoints_model(unet, ENCODER_OUTPUT)
    g1 = build_g1(tuple(enc.output.shape[1:]))
    assert tuple(g1(enc(np.zeros((2, 64, 64, 1), np.float32))).shape) == (2, 128)


@pytest.mark.parametrize("block,channels", list(enumerate(DECODER_BLOCK_CHANNELS, start=1)))
def test_g2_counts(block, channels):
    g2, proj = build_g2(channels, wgt_en=1, local_reg_size=1)
    assert count_params(g2) == 2 * channels * channels + 2 * channels
    assert count_params(proj) == 9 * channels * 128
    assert all(v.path.startswith("g2_") for v in g2.weights + proj.weights)


def test_g2_structure_and_projection_switch():
    g2, proj = build_g2(64, wgt_en=1, local_reg_size=1)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 64)).astype(np.float32)
    assert tuple(g2(x).shape) == (2, 8, 8, 64)
    assert g2.get_layer("g2_c1_a_conv").use_bias is False and g2.get_layer("g2_c1_b").use_bias is False
    assert g2.get_layer("g2_c1_a_bn").momentum == pytest.approx(0.99)
    assert tuple(proj(np.zeros((5, 576), np.float32)).shape) == (5, 128)
    assert proj.get_layer("g2_seg_pred").use_bias is False
    assert build_g2(64, wgt_en=0, local_reg_size=1)[1] is None
    assert build_g2(64, wgt_en=1, local_reg_size=0)[1] is None
    assert tuple(build_region_projection(9).output.shape) == (None, 128)


def test_h_head():
    h = build_h()
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 16)).astype(np.float32)
    y = h(x, training=False)
    assert tuple(y.shape) == (2, 16, 16, 16)
    assert count_params(h) == 16 * 16 + 32 + 16 * 16
    assert all(v.path.startswith("cont_") for v in h.weights)
    # inference-mode reference: conv1x1 -> BN (moving stats 0/1) -> ReLU -> conv1x1
    w1 = h.get_layer("cont_c1_a_conv").kernel.numpy()[0, 0]
    w2 = h.get_layer("cont_c1_b").kernel.numpy()[0, 0]
    ref = np.maximum((x @ w1) / np.sqrt(1 + 1e-3), 0) @ w2
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_synchronized_bn_flag():
    assert build_h(synchronized_bn=True).get_layer("cont_c1_a_bn").synchronized
    assert build_g2(16, synchronized_bn=True)[0].get_layer("g2_c1_a_bn").synchronized
    assert not build_h().get_layer("cont_c1_a_bn").synchronized
