"""Tests for models.transfer (prefix-matched trainable weights, BN statistics untouched) and workdir.load_unet."""
import json

import keras
import numpy as np
import pytest

from common.errors import InputError
from models.heads import build_g1
from models.transfer import transfer_weights
from models.unet import ENCODER_OUTPUT, build_unet, endpoints_model
from workdir import load_unet


def _small(seed, out=3, width=4):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", name="enc_a_conv")(x_in)
    x = keras.layers.BatchNormalization(name="enc_a_bn")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", name="dec_a_conv")(x)
    x = keras.layers.Flatten()(x)
    y = keras.layers.Dense(out, name="reg_d")(x)
    return keras.Model(x_in, y, name=f"small{seed}")


def _perturb_bn(model, value):
    bn = model.get_layer("enc_a_bn")
    for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance):
        v.assign(np.full(v.shape, value, np.float32))


def test_copies_trainable_only_and_respects_prefixes():
    src, dst = _small(1), _small(2)
    _perturb_bn(src, 3.0)
    before = {v.path: v.numpy().copy() for v in dst.weights}
    copied = transfer_weights(src, dst, ("enc_", "dec_", "reg_"), exclude_prefixes=("reg_",))
    assert copied == ["enc_a_conv", "enc_a_bn", "dec_a_conv"]
    for name in copied:
        for a, b in zip(src.get_layer(name).trainable_weights, dst.get_layer(name).trainable_weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    bn = dst.get_layer("enc_a_bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before["enc_a_bn/moving_mean"])  # not copied
    np.testing.assert_array_equal(bn.moving_variance.numpy(), before["enc_a_bn/moving_variance"])
    np.testing.assert_array_equal(dst.get_layer("reg_d").kernel.numpy(), before["reg_d/kernel"])


def test_errors():
    with pytest.raises(InputError, match="no layer"):
        transfer_weights(_small(1), _small(2), ("seg_",))
    with pytest.raises(InputError, match="shape"):
        transfer_weights(_small(1, width=4), _small(2, width=5), ("dec_",))


def test_unet_round_trip_through_nested_pretraining_model():
    """Encoder weights of a (UNet encoder + g1) pre-training model reach a fresh UNet; seg/reg do not."""
    pre_unet = build_unet(4, (64, 64))
    enc = endpoints_model(pre_unet, ENCODER_OUTPUT)
    g1 = build_g1((2, 2, 128))
    x_in = keras.Input((64, 64, 1))
    pretrain = keras.Model(x_in, g1(enc(x_in)), name="pretrain")
    fresh = build_unet(3, (64, 64))
    seg_before = fresh.get_layer("seg_fin_layer").kernel.numpy().copy()
    copied = transfer_weights(pretrain, fresh, ("enc_",), ("reg_",))
    assert len(copied) == 24 and all(n.startswith("enc_") for n in copied)
    for name in copied:
        for a, b in zip(pre_unet.get_layer(name).trainable_weights, fresh.get_layer(name).trainable_weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(fresh.get_layer("seg_fin_layer").kernel.numpy(), seg_before)
    copied = transfer_weights(pre_unet, fresh, ("enc_", "dec_"), ("seg_",))
    assert any(n.startswith("dec_") for n in copied)


def test_load_unet_workdir_and_file(tmp_path):
    model = build_unet(3, (32, 32))
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
    expected = model(x, training=False).numpy()
    work = tmp_path / "w"
    (work / "final").mkdir(parents=True)
    model.save_weights(str(work / "final" / "model.weights.h5"))
    (work / "config.json").write_text(json.dumps({"dataset": "x", "num_classes": 3}))
    np.testing.assert_allclose(load_unet(str(work))(x, training=False), expected, atol=1e-5)
    # best/ is preferred over final/
    other = build_unet(3, (32, 32))
    (work / "best").mkdir()
    other.save_weights(str(work / "best" / "model.weights.h5"))
    np.testing.assert_allclose(load_unet(str(work))(x, training=False), other(x, training=False), atol=1e-5)
    # a bare file finds ../config.json, or takes num_classes
    np.testing.assert_allclose(load_unet(str(work / "final" / "model.weights.h5"))(x, training=False),
                               expected, atol=1e-5)
    lone = tmp_path / "lone.weights.h5"
    model.save_weights(str(lone))
    np.testing.assert_allclose(load_unet(str(lone), num_classes=3)(x, training=False), expected, atol=1e-5)
    with pytest.raises(InputError, match="number of classes"):
        load_unet(str(lone))
    with pytest.raises(InputError, match="cannot load"):
        load_unet(str(lone), num_classes=4)


def test_load_unet_errors(tmp_path):
    wdir = tmp_path / "w"
    (wdir / "final").mkdir(parents=True)
    build_unet(2, (32, 32)).save_weights(str(wdir / "final" / "model.weights.h5"))
    (wdir / "config.json").write_text(json.dumps({"dataset": "mine"}))
    with pytest.raises(InputError, match=r"config.json: no num_classes and --dataset=mine: unknown dataset"):
        load_unet(str(wdir))
    with pytest.raises(InputError, match="no such file"):
        load_unet(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="best"):
        load_unet(str(tmp_path))
    bad = tmp_path / "x.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match="weights.h5"):
        load_unet(str(bad), num_classes=2)
