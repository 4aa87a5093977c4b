"""models.batchnorm.BatchNorm: the fused training kernel computes what keras.layers.BatchNormalization does."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.batchnorm import BatchNorm, set_fused_bn
from models.heads import build_h
from models.unet import build_unet


def _pair(channels: int, shape: tuple[int, ...], **kwargs):
    ref = keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3, **kwargs)
    ours = BatchNorm(momentum=0.99, epsilon=1e-3, **kwargs)
    for layer in (ref, ours):
        layer.build(shape)
    ours.gamma.assign(np.linspace(0.5, 1.5, channels).astype(np.float32))
    ours.beta.assign(np.linspace(-0.2, 0.3, channels).astype(np.float32))
    ref.gamma.assign(ours.gamma), ref.beta.assign(ours.beta)
    return ref, ours


def _train_twice(layer, xs, dy, compile_mode):
    def once(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])

    fn = once if compile_mode == "eager" else tf.function(once, jit_compile=compile_mode == "xla")
    out = [fn(x) for x in xs]
    return [np.asarray(t, np.float32) for t in out[-1]] + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("compile_mode", ["eager", "graph", "xla"])
def test_fused_matches_keras_forward_gradients_and_moving_statistics(compile_mode):
    rng = np.random.default_rng(0)
    shape = (4, 12, 10, 8)
    xs = [tf.constant(rng.normal(1.0, 3.0, shape), tf.float32) for _ in range(2)]
    dy = tf.constant(rng.normal(size=shape), tf.float32)
    ref, ours = _pair(8, shape)
    for a, b in zip(_train_twice(ref, xs, dy, compile_mode), _train_twice(ours, xs, dy, compile_mode)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a).max())))
    assert not np.allclose(ours.moving_variance.numpy(), 1.0)  # the statistics moved


def test_fused_runs_the_fused_kernel_and_keras_path_does_not():
    x = tf.zeros((2, 4, 4, 3))

    def op_types(layer, **call_kwargs):
        layer.build(x.shape)
        graph = tf.function(lambda t: layer(t, **call_kwargs)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(BatchNorm(), training=True)
    assert "FusedBatchNormV3" not in op_types(BatchNorm(fused=False), training=True)
    assert "FusedBatchNormV3" not in op_types(BatchNorm(), training=False)  # inference: Keras's code
    assert "FusedBatchNormV3" not in op_types(BatchNorm(synchronized=True), training=True)


def test_single_value_per_channel_gives_keras_zero_variance():
    ref, ours = _pair(3, (1, 1, 1, 3))
    x = tf.constant([[[[1.0, -2.0, 3.0]]]])
    np.testing.assert_allclose(ours(x, training=True).numpy(), ref(x, training=True).numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), ref.moving_variance.numpy(), atol=1e-7)
    assert np.all(np.isfinite(ours.moving_variance.numpy()))


def test_mixed_bfloat16_output_dtype_and_values():
    prev = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ref, ours = _pair(4, (2, 6, 6, 4))
    finally:
        keras.config.set_dtype_policy(prev)
    x = tf.cast(tf.constant(np.random.default_rng(1).normal(size=(2, 6, 6, 4)), tf.float32), tf.bfloat16)
    a, b = ref(x, training=True), ours(x, training=True)
    assert b.dtype == a.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(b, tf.float32).numpy(), tf.cast(a, tf.float32).numpy(), atol=2e-2)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)


def test_set_fused_bn_reaches_every_layer_and_keeps_weights():
    unet, h = build_unet(4, (32, 32)), build_h()
    assert set_fused_bn(unet, False) == 28 and set_fused_bn(h, False) == 1
    bns = [layer for layer in unet.layers if layer.name.endswith("_bn")]
    assert all(isinstance(layer, BatchNorm) and not layer.fused for layer in bns)
    assert [w.name for w in bns[0].weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert unet.count_params() == 2_095_760 + 2 * sum(layer.gamma.shape[0] for layer in bns)
    assert BatchNorm.from_config(bns[0].get_config()).fused is False
