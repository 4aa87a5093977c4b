"""Projection heads of the two papers (ORIGINAL_SPEC §2.3).

- g1 (2020 global loss) on the encoder output: flatten -> Dense 1024 ReLU -> Dense 128, no biases.
- g2 (2020 local loss) on decoder block l: 1x1 conv (no bias) + BN + ReLU -> 1x1 conv (no bias),
  plus, when ``wgt_en=1`` with 3x3 regions, a Dense-128 (no bias) shared over all flattened
  3x3 x ch region vectors (:func:`build_region_projection`), which the local loss applies.
- h (2023 pseudo-label loss) on the last decoder layer: the same two 1x1 convs with 16 channels.

Convs use untruncated He-normal init, dense layers Glorot-uniform (TF default), as the originals.
The last layer of every head computes in float32 under any mixed-precision policy
(``models.precision.OUTPUT_DTYPE``), so the contrastive losses get float32 embeddings.
Layer names carry the prefixes ``reg_`` (g1), ``g2_`` (g2; the original reused ``seg_c1_*``/``seg_pred``,
ORIGINAL_SPEC §9.2.9) and ``cont_`` (h).
"""
from __future__ import annotations

import keras

from models.batchnorm import BatchNorm
from models.precision import OUTPUT_DTYPE
from models.unet import BN_EPSILON, BN_MOMENTUM, conv_initializer

PROJECTION_DIM = 128
EMBEDDING_DIM_H = 16


def build_g1(input_shape: tuple[int, int, int], name: str = "g1") -> keras.Model:
    """g1: ``(N, h, w, c)`` encoder output -> ``(N, 128)`` (not normalised).

    Args:
        input_shape: static ``(h, w, c)`` of the encoder output (6x6x128 for 192 input, 5x5x128 for 160).
        name: model name.

    Returns:
        Model with layers ``reg_flat``, ``reg_nn1`` (Dense 1024, ReLU, no bias), ``reg_pred`` (Dense 128,
        no bias).
    """
    if any(d is None for d in input_shape):
        raise ValueError(f"g1 needs a static input shape, got {input_shape}")
    x_in = keras.Input(shape=tuple(input_shape), name="reg_input")  # (N, h, w, c)
    x = keras.layers.Flatten(name="reg_flat")(x_in)  # (N, h*w*c)
    x = keras.layers.Dense(1024, activation="relu", use_bias=False, kernel_initializer="glorot_uniform",
                           name="reg_nn1")(x)  # (N, 1024)
    z = keras.layers.Dense(PROJECTION_DIM, use_bias=False, kernel_initializer="glorot_uniform",
                           dtype=OUTPUT_DTYPE, name="reg_pred")(x)  # (N, 128)
    return keras.Model(x_in, z, name=name)


def _two_conv_head(channels: int, prefix: str, in_channels: int, name: str,
                   synchronized_bn: bool = False) -> keras.Model:
    """1x1 conv (no bias) + BN + ReLU, then 1x1 conv (no bias); any spatial size."""
    x_in = keras.Input(shape=(None, None, in_channels), name=f"{prefix}_input")  # (N, h, w, c_in)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=conv_initializer(),
                            name=f"{prefix}_c1_a_conv")(x_in)
    x = BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized_bn,
                  name=f"{prefix}_c1_a_bn")(x)
    x = keras.layers.ReLU(name=f"{prefix}_c1_a")(x)
    y = keras.layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=conv_initializer(),
                            dtype=OUTPUT_DTYPE, name=f"{prefix}_c1_b")(x)  # (N, h, w, channels)
    return keras.Model(x_in, y, name=name)


def build_region_projection(region_dim: int, name: str = "g2_proj") -> keras.Model:
    """The shared Dense-128 (no bias) of g2 applied to flattened region vectors (``wgt_en=1``).

    Args:
        region_dim: length of one flattened region vector (9 * channels for 3x3 regions).
        name: model name.

    Returns:
        Model ``(M, region_dim) -> (M, 128)`` with one layer ``g2_seg_pred``.
    """
    x_in = keras.Input(shape=(int(region_dim),), name="g2_region")  # (M, region_dim)
    y = keras.layers.Dense(PROJECTION_DIM, use_bias=False, kernel_initializer="glorot_uniform",
                           dtype=OUTPUT_DTYPE, name="g2_seg_pred")(x_in)  # (M, 128)
    return keras.Model(x_in, y, name=name)


def build_g2(channels: int, wgt_en: int = 1, local_reg_size: int = 1, name: str = "g2",
             synchronized_bn: bool = False) -> tuple[keras.Model, keras.Model | None]:
    """g2 for the local loss on decoder block l (channels 128, 128, 64, 32, 16 for l = 1..5).

    Args:
        channels: channels of the decoder block output (the head keeps this width).
        wgt_en: 1 to add the shared Dense-128 region projection (only used with 3x3 regions, as the
            original, where ``wgt_en`` has no effect for 1x1 regions).
        local_reg_size: 1 for 3x3 regions, 0 for single pixels.
        name: model name of the conv part.
        synchronized_bn: BatchNormalization synchronized across replicas.

    Returns:
        ``(g2, projection)``: ``g2`` maps ``(N, h, w, channels) -> (N, h, w, channels)``; ``projection``
        is :func:`build_region_projection` ``(9*channels -> 128)`` or ``None``. Pass ``projection`` to
        ``losses.local_contrastive.local_contrastive_loss`` and add its trainable variables to the
        optimizer's list.
    """
    g2 = _two_conv_head(int(channels), "g2", int(channels), name, synchronized_bn)
    projection = None
    if int(wgt_en) == 1 and int(local_reg_size) == 1:
        projection = build_region_projection(9 * int(channels), name=f"{name}_proj")
    return g2, projection


def build_h(in_channels: int = 16, name: str = "h", synchronized_bn: bool = False) -> keras.Model:
    """h (2023): ``(N, H, W, 16)`` last decoder layer -> ``(N, H, W, 16)`` embeddings.

    Layers ``cont_c1_a_conv``/``cont_c1_a_bn``/``cont_c1_a`` (1x1 conv 16, no bias, BN, ReLU) and
    ``cont_c1_b`` (1x1 conv 16, no bias).
    """
    return _two_conv_head(EMBEDDING_DIM_H, "cont", int(in_channels), name, synchronized_bn)
