"""The UNet of Chaitanya et al. (ORIGINAL_SPEC §2.2), built as a plain Keras functional model.

Encoder: six levels of two 3x3 conv blocks (16, 32, 64, 128, 128, 128 filters) with 2x2 max pooling
between levels. Decoder: five blocks, each nearest x2 upsampling -> 2x2 conv block -> concatenation
``[up_conv, skip]`` -> 3x3 conv blocks (two, except the last block which has one). Segmentation head:
two 3x3/16 conv blocks and a 3x3 conv to ``num_classes`` logits without bias.

A conv block is Conv2D (with bias, as the original) -> BatchNormalization(momentum 0.99, eps 1e-3)
-> ReLU, named ``<n>_conv``, ``<n>_bn`` and ``<n>``, so ``model.get_layer(n).output`` is the block
output and every weight carries the ``enc_``/``dec_``/``seg_`` prefix used for transfer. The BN layers
are :class:`models.batchnorm.BatchNorm`: Keras's BatchNormalization (same variables and results) whose
training pass runs the fused kernel (``models.batchnorm.set_fused_bn(model, False)`` switches it off).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from models.batchnorm import BatchNorm
from models.precision import OUTPUT_DTYPE

ENCODER_OUTPUT = "enc_c6_b"
DECODER_BLOCK_OUTPUTS = ("dec_c5_b", "dec_c4_b", "dec_c3_b", "dec_c2_b", "dec_c1_a")
LAST_DECODER_LAYER = "dec_c1_a"
# Channels of the output of decoder block l (1..5), for the g2 head.
DECODER_BLOCK_CHANNELS = (128, 128, 64, 32, 16)
# Total down-sampling factor; H and W must be multiples of it.
DOWNSAMPLING = 32

_ENC_FILTERS = (16, 32, 64, 128, 128, 128)
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def conv_initializer() -> keras.initializers.Initializer:
    """He-normal, not truncated: N(0, 2/fan_in), as ``layers_bn.get_weight_variable`` (§1.2)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


def conv_block(x, name: str, filters: int, kernel: int = 3, use_bias: bool = True, relu: bool = True,
               synchronized_bn: bool = False):
    """Conv2D (SAME) -> BatchNormalization -> ReLU, layers named ``<name>_conv``, ``<name>_bn``, ``<name>``.

    Args:
        x: input tensor ``(N, H, W, c_in)``.
        name: block name; the ReLU layer gets exactly this name.
        filters: output channels.
        kernel: square kernel size (2x2 convs pad 0 before / 1 after, as TF1 SAME).
        use_bias: add a (zero-initialised) bias before BN, as the original.
        relu: apply the ReLU layer (named ``name``); if False the BN layer output is returned.
        synchronized_bn: batch statistics over all replicas of a ``tf.distribute`` strategy.

    Returns:
        The block output ``(N, H, W, filters)``.
    """
    x = keras.layers.Conv2D(
        filters, kernel, padding="same", use_bias=use_bias, kernel_initializer=conv_initializer(),
        bias_initializer="zeros", name=f"{name}_conv")(x)
    x = BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized_bn, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=name)(x)
    return x


def build_unet(num_classes: int, image_size: tuple[int | None, int | None] = (None, None),
               name: str = "unet", synchronized_bn: bool = False) -> keras.Model:
    """Build the exact UNet of ORIGINAL_SPEC §2.2.

    Args:
        num_classes: number of output classes C (background included).
        image_size: ``(H, W)``; ``None`` entries give a model for any size divisible by 32.
        name: model name.
        synchronized_bn: BatchNormalization with statistics over all replicas (``synchronized=True``),
            so that N replicas compute the same BN as one replica on the union of their batches.

    Returns:
        A functional model ``(N, H, W, 1) float32 -> (N, H, W, C)`` float32 logits (the layers compute
        in the precision of the Keras dtype policy at build time, see :mod:`models.precision`; the
        logits layer always in float32). Trainable parameters:
        encoder 885,552, decoder 1,204,928, segmentation head 4,704 + 144*C (5,136 / 5,280 / 5,856
        for C = 3 / 4 / 8); 2,095,760 in total for C = 4.
    """
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    h, w = image_size
    for s in (h, w):
        if s is not None and s % DOWNSAMPLING:
            raise ValueError(f"image size {image_size} must be divisible by {DOWNSAMPLING}")
    x_in = keras.Input(shape=(h, w, 1), dtype="float32", name="image")  # (N, H, W, 1)

    # Encoder.
    x = x_in
    skips = []
    for level, filters in enumerate(_ENC_FILTERS, start=1):
        x = conv_block(x, f"enc_c{level}_a", filters, synchronized_bn=synchronized_bn)
        # (N, H / 2^(level-1), W / 2^(level-1), filters)
        x = conv_block(x, f"enc_c{level}_b", filters, synchronized_bn=synchronized_bn)
        if level < len(_ENC_FILTERS):
            skips.append(x)
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"enc_pool{level}")(x)

    # Decoder: blocks 1..5 go up from level 6 to level 1.
    for block in range(1, 6):
        level = 6 - block  # level of the skip connection (5..1)
        filters = _ENC_FILTERS[level - 1]
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"dec_up{level + 1}")(x)
        x = conv_block(x, f"dec_dc{level + 1}", filters, kernel=2, synchronized_bn=synchronized_bn)
        x = keras.layers.Concatenate(axis=-1, name=f"dec_cat_c{level + 1}")([x, skips[level - 1]])
        x = conv_block(x, f"dec_c{level}_a", filters, synchronized_bn=synchronized_bn)
        if block < 5:
            # (N, H / 2^(level-1), W / 2^(level-1), filters)
            x = conv_block(x, f"dec_c{level}_b", filters, synchronized_bn=synchronized_bn)

    # Segmentation head.
    x = conv_block(x, "seg_c1_a", 16, synchronized_bn=synchronized_bn)
    x = conv_block(x, "seg_c1_b", 16, synchronized_bn=synchronized_bn)
    logits = keras.layers.Conv2D(
        num_classes, 3, padding="same", use_bias=False, kernel_initializer=conv_initializer(),
        dtype=OUTPUT_DTYPE, name="seg_fin_layer")(x)  # (N, H, W, C) float32 under every policy
    return keras.Model(x_in, logits, name=name)


def decoder_block_prefixes(num_blocks: int) -> tuple[str, ...]:
    """Layer-name prefixes of decoder blocks 1..``num_blocks`` (for transfer after decoder pre-training).

    Example: ``decoder_block_prefixes(3) == ("dec_dc6", "dec_c5_", "dec_dc5", "dec_c4_", "dec_dc4", "dec_c3_")``.
    """
    if not 0 <= int(num_blocks) <= 5:
        raise ValueError(f"num_blocks must be in 0..5, got {num_blocks}")
    prefixes: list[str] = []
    for block in range(1, int(num_blocks) + 1):
        level = 6 - block
        prefixes += [f"dec_dc{level + 1}", f"dec_c{level}_"]
    return tuple(prefixes)


def endpoints_model(unet: keras.Model, names: Sequence[str] | str, name: str | None = None) -> keras.Model:
    """A model sharing ``unet``'s layers that outputs the named layer outputs.

    Args:
        unet: a model from :func:`build_unet`.
        names: one layer name or a sequence of names (e.g. ``ENCODER_OUTPUT``).
        name: optional model name.

    Returns:
        ``keras.Model(unet.input, outputs)``; a single tensor if ``names`` is a string, else a list.
        Only the layers needed for the outputs run.
    """
    if isinstance(names, str):
        outputs = unet.get_layer(names).output
    else:
        outputs = [unet.get_layer(n).output for n in names]
    return keras.Model(unet.input, outputs, name=name or f"{unet.name}_endpoints")
