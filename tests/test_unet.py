"""Tests for models.unet: exact architecture (parameter counts, names, wiring), init, dynamic shapes."""
import numpy as np
import pytest
import tensorflow as tf

from _model_helpers import count_params
from models.unet import (DECODER_BLOCK_CHANNELS, DECODER_BLOCK_OUTPUTS, ENCODER_OUTPUT, LAST_DECODER_LAYER,
                         build_unet, endpoints_model)


@pytest.fixture(scope="module")
def unet4():
    return build_unet(4, (64, 64))


@pytest.mark.parametrize("num_classes,seg", [(3, 5136), (4, 5280), (8, 5856)])
def test_parameter_counts_match_original(num_classes, seg):
    model = build_unet(num_classes, (192, 192))
    assert count_params(model, "enc_") == 885_552
    assert count_params(model, "dec_") == 1_204_928
    assert count_params(model, "seg_") == seg
    assert count_params(model) == 885_552 + 1_204_928 + seg
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == count_params(model)
    if num_classes == 4:
        assert count_params(model) == 2_095_760


def test_layer_names_and_prefixes(unet4):
    names = {layer.name for layer in unet4.layers}
    for level in range(1, 7):
        for ab in "ab":
            assert {f"enc_c{level}_{ab}", f"enc_c{level}_{ab}_conv", f"enc_c{level}_{ab}_bn"} <= names
    for lvl in range(2, 7):
        assert f"dec_dc{lvl}" in names
    assert "dec_c1_a" in names and "dec_c1_b" not in names  # a single conv in the last block
    assert {"seg_c1_a", "seg_c1_b", "seg_fin_layer"} <= names
    for v in unet4.trainable_weights:
        assert v.path.split("/")[0][:4] in ("enc_", "dec_", "seg_"), v.path
    fin = unet4.get_layer("seg_fin_layer")
    assert fin.use_bias is False and tuple(fin.kernel.shape) == (3, 3, 16, 4)
    bn = unet4.get_layer("enc_c1_a_bn")
    assert bn.momentum == pytest.approx(0.99) and bn.epsilon == pytest.approx(1e-3)
    assert unet4.get_layer("enc_c1_a_conv").use_bias


def test_endpoints_shapes(unet4):
    ep = endpoints_model(unet4, [ENCODER_OUTPUT, *DECODER_BLOCK_OUTPUTS])
    outs = ep(np.zeros((1, 64, 64, 1), np.float32), training=False)
    assert tuple(outs[0].shape) == (1, 2, 2, 128)
    sizes = (4, 8, 16, 32, 64)
    for out, size, ch in zip(outs[1:], sizes, DECODER_BLOCK_CHANNELS):
        assert tuple(out.shape) == (1, size, size, ch)
    assert DECODER_BLOCK_OUTPUTS[-1] == LAST_DECODER_LAYER
    single = endpoints_model(unet4, ENCODER_OUTPUT)
    assert tuple(single(np.zeros((2, 64, 64, 1), np.float32)).shape) == (2, 2, 2, 128)
    # shares weights with the UNet
    assert single.get_layer("enc_c1_a_conv") is unet4.get_layer("enc_c1_a_conv")


def test_wiring_concat_order_and_skips(unet4):
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
    for lvl, skip in [(6, "enc_c5_b"), (5, "enc_c4_b"), (4, "enc_c3_b"), (3, "enc_c2_b"), (2, "enc_c1_b")]:
        cat, up, sk = endpoints_model(unet4, [f"dec_cat_c{lvl}", f"dec_dc{lvl}", skip])(x, training=False)
        n_up = up.shape[-1]
        np.testing.assert_array_equal(cat[..., :n_up], up)  # up-conv first
        np.testing.assert_array_equal(cat[..., n_up:], sk)


def test_decoder_upsampling_is_nearest_and_2x2_pads_after(unet4):
    """dec_dc6 = conv2x2(nearest_up(enc_c6_b)) with TF1 SAME padding (0 before, 1 after)."""
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 1)).astype(np.float32)
    enc, up = endpoints_model(unet4, [ENCODER_OUTPUT, "dec_up6"])(x, training=False)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(enc, 2, axis=1), 2, axis=2))
    conv = unet4.get_layer("dec_dc6_conv")
    ref = tf.nn.conv2d(tf.pad(up, [[0, 0], [0, 1], [0, 1], [0, 0]]), conv.kernel, 1, "VALID") + conv.bias
    np.testing.assert_allclose(conv(up), ref, atol=1e-5)


@pytest.mark.parametrize("hw", [(64, 64), (96, 128)])
def test_dynamic_shapes(hw):
    model = build_unet(3)
    out = model(np.zeros((2, *hw, 1), np.float32), training=False)
    assert tuple(out.shape) == (2, *hw, 3)


def test_static_shape_and_bad_size():
    assert tuple(build_unet(2, (32, 64)).output.shape) == (None, 32, 64, 2)
    with pytest.raises(ValueError):
        build_unet(4, (100, 100))
    with pytest.raises(ValueError):
        build_unet(1)


def test_initialisation_untruncated_he_normal_zero_bias(unet4):
    kernel = unet4.get_layer("enc_c4_b_conv").kernel.numpy()  # (3, 3, 128, 128)
    std = np.sqrt(2.0 / (3 * 3 * 128))
    assert kernel.std() == pytest.approx(std, rel=0.02)
    # an untruncated normal has ~4.6% of values beyond 2 std; a truncated one has none
    assert np.mean(np.abs(kernel) > 2 * std) > 0.03
    for layer in unet4.layers:
        if layer.name.endswith("_conv"):
            assert np.all(layer.bias.numpy() == 0)
        if layer.name.endswith("_bn"):
            assert np.all(layer.gamma.numpy() == 1) and np.all(layer.beta.numpy() == 0)


def test_training_step_changes_weights_and_bn_stats():
    model = build_unet(2, (32, 32))
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert not np.all(model.get_layer("enc_c1_a_bn").moving_mean.numpy() == 0)


def test_synchronized_bn_flag():
    model = build_unet(2, (32, 32), synchronized_bn=True)
    bns = [layer for layer in model.layers if layer.name.endswith("_bn")]
    assert len(bns) == 12 + 14 + 2 and all(layer.synchronized for layer in bns)
    assert not any(layer.synchronized for layer in build_unet(2, (32, 32)).layers if layer.name.endswith("_bn"))


def test_decoder_block_prefixes(unet4):
    from models.unet import decoder_block_prefixes
    assert decoder_block_prefixes(3) == ("dec_dc6", "dec_c5_", "dec_dc5", "dec_c4_", "dec_dc4", "dec_c3_")
    assert decoder_block_prefixes(0) == ()
    dec_layers = {layer.name for layer in unet4.layers if layer.name.startswith("dec_") and layer.weights}
    covered = {n for n in dec_layers if any(n.startswith(p) for p in decoder_block_prefixes(5))}
    assert covered == dec_layers
    block1 = {n for n in dec_layers if any(n.startswith(p) for p in decoder_block_prefixes(1))}
    assert block1 == {f"{b}_{s}" for b in ("dec_dc6", "dec_c5_a", "dec_c5_b") for s in ("conv", "bn")}
    with pytest.raises(ValueError):
        decoder_block_prefixes(6)
