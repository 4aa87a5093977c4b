"""BatchNormalization whose training-mode pass runs TensorFlow's fused batch-norm kernel.

Keras 3's ``BatchNormalization`` computes batch statistics with ``tf.nn.moments`` and normalizes
with ``tf.nn.batch_normalization``: in training mode about five element-wise passes over the
activation forward and a dozen backward (autodiff of those ops). ``FusedBatchNormV3`` and its
gradient do the same in two passes each (oneDNN's batch normalization when oneDNN is on). On one
of the UNet's 20 x 192x192x16 activations, forward + backward took 163 ms with Keras's layer, 36 ms
with this one (the PyTorch peer: 112 ms), and the baseline step got 1.6x faster, on the Intel Xeon
kind (``python -m bench.ops``, README "Benchmarks"); the passes are memory-bound, so CPUs with less
bandwidth per core should gain at least as much.

:class:`BatchNorm` keeps Keras's semantics: the same variables (names, order, initializers), the
same moving-statistics update with the *biased* batch variance (the fused kernel returns the
Bessel-corrected one, which is converted back), the same float32 computation under mixed
precision, and Keras's own code for inference, masks, renorm, synchronized (cross-replica)
statistics, other axes and ranks, or ``fused=False``. Forward, gradients and moving statistics
agree with ``keras.layers.BatchNormalization`` to float32 rounding (``tests/test_batchnorm.py``).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from models.transfer import iter_layers


class BatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training-mode kernel for 4-D NHWC inputs.

    Args:
        fused: use ``FusedBatchNormV3`` where it computes the same as Keras (training mode, 4-D
            input, last axis, no mask, not synchronized, no renorm); ``False``: always Keras's code.
            A plain attribute, so it may be switched before a function is traced.
        **kwargs: ``keras.layers.BatchNormalization``'s arguments.
    """

    def __init__(self, fused: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def _fused_applies(self, inputs, training, mask) -> bool:
        return (self.fused and bool(training) and self.trainable and mask is None and not self.synchronized
                and not self.renorm and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and self.axis in (-1, 3) and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")  # as Keras: statistics and normalization in float32
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32"), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)  # y (N, H, W, C); mean, variance (C,)
        shape = tf.shape(x)
        n = tf.cast(shape[0] * shape[1] * shape[2], "float32")
        variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))  # Bessel-corrected -> biased, as Keras
        self.moving_mean.assign(
            tf.cast(self.moving_mean, "float32") * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, "float32") * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}


def set_fused_bn(model: keras.layers.Layer, fused: bool) -> int:
    """Set ``fused`` on every :class:`BatchNorm` of ``model`` (nested models too) before it is traced.

    Returns:
        The number of layers set.
    """
    layers = [layer for layer in iter_layers(model) if isinstance(layer, BatchNorm)]
    for layer in layers:
        layer.fused = bool(fused)
    return len(layers)
