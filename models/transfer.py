"""Weight transfer between stages by layer-name prefix (ORIGINAL_SPEC §4.2, §4.3, §8.1).

The originals restore every *trainable* variable whose name matches (conv kernels and biases, BN
gamma and beta, dense kernels) and leave BN moving statistics at their fresh values. Layers are
matched by exact name; a layer is eligible when its name starts with one of ``include_prefixes``
and with none of ``exclude_prefixes``. Layers present in the destination but not in the source
keep their initial weights (e.g. decoder blocks beyond ``--no_of_decoder_blocks``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras

from common.errors import InputError


def iter_layers(model: keras.layers.Layer) -> Iterable[keras.layers.Layer]:
    """Yield every non-container layer of ``model``, descending into nested models."""
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "layers", None):
            yield from iter_layers(layer)
        else:
            yield layer


def _matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(name.startswith(p) for p in include) and not any(name.startswith(p) for p in exclude)


def _weights(layer: keras.layers.Layer, include_non_trainable: bool) -> list:
    return list(layer.weights) if include_non_trainable else list(layer.trainable_weights)


def transfer_weights(src: keras.Model, dst: keras.Model, include_prefixes: Sequence[str],
                     exclude_prefixes: Sequence[str] = (), include_non_trainable: bool = False) -> list[str]:
    """Copy the trainable weights of name-matched layers from ``src`` to ``dst``.

    Args:
        src: source model (e.g. the UNet of the previous stage; nested models are searched).
        dst: destination model.
        include_prefixes: layer-name prefixes to copy, e.g. ``("enc_",)`` or ``("enc_", "dec_")``.
        exclude_prefixes: prefixes never copied, e.g. ``("reg_", "seg_")``.
        include_non_trainable: copy the non-trainable weights too (BN moving mean and variance);
            the originals never do (a documented deviation where used).

    Returns:
        Names of the destination layers whose weights were copied, in model order.

    Raises:
        InputError: no layer matched, or a matched layer has weights of a different shape.
    """
    if isinstance(include_prefixes, str):
        include_prefixes = (include_prefixes,)
    if isinstance(exclude_prefixes, str):
        exclude_prefixes = (exclude_prefixes,)
    src_layers = {layer.name: layer for layer in iter_layers(src)}
    copied = []
    for layer in iter_layers(dst):
        if not layer.trainable_weights or not _matches(layer.name, include_prefixes, exclude_prefixes):
            continue
        other = src_layers.get(layer.name)
        if other is None:
            continue
        dst_w = {v.name: v for v in _weights(layer, include_non_trainable)}
        src_w = {v.name: v for v in _weights(other, include_non_trainable)}
        if set(dst_w) != set(src_w):
            raise InputError(f"layer {layer.name}: source weights {sorted(src_w)} do not match "
                             f"destination weights {sorted(dst_w)}")
        for vname, var in dst_w.items():
            value = src_w[vname]
            if tuple(var.shape) != tuple(value.shape):
                raise InputError(f"layer {layer.name}: weight {vname} has shape {tuple(value.shape)} in the "
                                 f"source model but {tuple(var.shape)} in the destination")
        for vname, var in dst_w.items():
            var.assign(src_w[vname])
        copied.append(layer.name)
    if not copied:
        raise InputError(f"no layer with prefix {tuple(include_prefixes)} (excluding {tuple(exclude_prefixes)}) "
                         f"found in both {src.name!r} and {dst.name!r}")
    return copied
