"""``predict.py``'s whole pipeline as TensorFlow ops, for the ``segment_volume`` serving signature.

A raw volume ``(D, H0, W0)`` and its in-plane pixel size go through the same steps as
``data.volume_prep.preprocess_volume`` + ``evaluation.inference.predict_native`` (without N4, which
has no TensorFlow implementation; ``predict.py --n4 false`` is the reference):

1. min-max normalization between the 1st and 99th percentile of the whole volume (NumPy's default
   ``linear`` percentile, computed in float64 on the sorted voxels, result rounded to float32 as
   preprocessing stores it);
2. in-plane rescale by ``spacing / target_resolution`` to ``max(round(H0 * s), 1)`` pixels with
   scikit-image's order-1 resize semantics (``mode='constant'``, no anti-aliasing, grid mode:
   output pixel ``u`` samples input coordinate ``(u + 0.5) * n_in / n_out - 0.5``, neighbours
   outside the image count as 0; output clipped to the input's value range), as interpolation
   matrices applied along each axis in float64;
3. centre crop / zero-pad to the network size (start ``(x - n) // 2``, offset ``(n - x) // 2``);
4. the network on chunks of 20 slices with batch normalization in inference mode, softmax;
5. the inverse: undo the crop/pad, resize the class probabilities to ``(H0, W0)`` with the same
   order-1 resize (clipped per slice as scikit-image does), argmax.

Every step is a matrix product or an elementwise op, so the graph runs in TF Serving (no
``py_function``). The crop/pad is folded into the interpolation matrices: ``A = C R`` maps native
rows to network rows, and the inverse ``R' C^T`` maps network rows to native rows.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import tensorflow as tf

CHUNK = 20  # slices per forward pass, as evaluation.inference.CHUNK
_F64 = tf.float64
INPUT_SIGNATURE = (tf.TensorSpec(shape=(None, None, None), dtype=tf.float32, name="image"),  # (D, H0, W0)
                   tf.TensorSpec(shape=(2,), dtype=tf.float32, name="spacing"))  # mm along H0, W0


def percentile_linear(sorted_values: tf.Tensor, q: float) -> tf.Tensor:
    """``np.percentile(values, q)`` (method ``linear``) of an ascending float64 vector.

    Same arithmetic as NumPy: index ``(n - 1) * (q / 100)``, floor / next neighbour (the last
    element beyond the end), and ``a + (b - a) t`` for ``t < 0.5``, else ``b - (b - a)(1 - t)``.
    """
    n = tf.shape(sorted_values, out_type=tf.int64)[0]
    virtual = tf.cast(n - 1, _F64) * tf.constant(q / 100.0, _F64)  # ()
    prev = tf.floor(virtual)
    t = virtual - prev
    above = virtual >= tf.cast(n - 1, _F64)
    i0 = tf.where(above, n - 1, tf.cast(prev, tf.int64))
    i1 = tf.where(above, n - 1, tf.cast(prev, tf.int64) + 1)
    a, b = tf.gather(sorted_values, i0), tf.gather(sorted_values, i1)
    diff = b - a
    return tf.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)


def normalize_minmax(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(x - P1) / (P99 - P1)`` over the whole volume, as ``data.volume_prep.normalize_minmax``.

    Args:
        image: any-shape float32 raw intensities.

    Returns:
        ``(normalized float32, p1 float64, p99 float64)``; fails with ``InvalidArgumentError``
        when the two percentiles are equal (constant image).
    """
    values = tf.sort(tf.reshape(tf.cast(image, _F64), [-1]))  # (N,)
    p1, p99 = percentile_linear(values, 1.0), percentile_linear(values, 99.0)
    check = tf.debugging.assert_greater(p99, p1, message="image intensities are constant (1st and 99th "
                                                         "percentile are equal)")
    with tf.control_dependencies([check]):
        out = tf.cast((tf.cast(image, _F64) - p1) / (p99 - p1), tf.float32)
    return out, p1, p99


def resize_matrix(n_out: tf.Tensor, n_in: tf.Tensor) -> tf.Tensor:
    """``(n_out, n_in)`` float64 weights of scikit-image's order-1 resize along one axis.

    Output pixel ``u`` samples input coordinate ``c = (u + 0.5) * n_in / n_out - 0.5`` with weights
    ``1 - (c - floor c)`` and ``c - floor c`` on pixels ``floor c`` and ``floor c + 1``; a neighbour
    outside ``[0, n_in)`` contributes 0 (``mode='constant'``, ``cval=0``).
    """
    n_out = tf.cast(n_out, tf.int64)
    n_in = tf.cast(n_in, tf.int64)
    u = tf.cast(tf.range(n_out), _F64)  # (n_out,)
    c = (u + 0.5) * (tf.cast(n_in, _F64) / tf.cast(n_out, _F64)) - 0.5
    i0 = tf.floor(c)
    w1 = c - i0  # weight of floor(c) + 1
    cols = tf.range(n_in, dtype=tf.int64)[None, :]  # (1, n_in)
    i0 = tf.cast(i0, tf.int64)[:, None]  # (n_out, 1)
    w1 = w1[:, None]
    return (tf.where(tf.equal(cols, i0), 1.0 - w1, tf.zeros([], _F64))
            + tf.where(tf.equal(cols, i0 + 1), w1, tf.zeros([], _F64)))  # (n_out, n_in)


def crop_pad_matrix(n_target: int, n_in: tf.Tensor) -> tf.Tensor:
    """``(n_target, n_in)`` 0/1 float64 matrix of ``data.geometry.crop_or_pad`` along one axis.

    Row ``r`` picks input ``r + start`` (crop, ``start = (n_in - n_target) // 2``) or ``r - offset``
    (pad, ``offset = (n_target - n_in) // 2``); rows outside the input are zero. Its transpose is
    ``data.geometry.uncrop_or_unpad``.
    """
    n_in = tf.cast(n_in, tf.int64)
    shift = tf.where(n_in >= n_target, (n_in - n_target) // 2, -((n_target - n_in) // 2))
    src = tf.range(n_target, dtype=tf.int64)[:, None] + shift  # (n_target, 1)
    return tf.cast(tf.equal(src, tf.range(n_in, dtype=tf.int64)[None, :]), _F64)  # (n_target, n_in)


def clip_like_skimage(out: tf.Tensor, inp: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
    """scikit-image's ``clip=True`` for ``mode='constant', cval=0``: clip ``out`` to the value
    range of ``inp`` (reduced over ``axes``), widened to include 0 when 0 lies outside the input
    range but inside the output range."""
    lo, hi = tf.reduce_min(inp, axis=axes, keepdims=True), tf.reduce_max(inp, axis=axes, keepdims=True)
    olo, ohi = tf.reduce_min(out, axis=axes, keepdims=True), tf.reduce_max(out, axis=axes, keepdims=True)
    zero = tf.zeros([], out.dtype)
    keep_cval = tf.logical_and(tf.logical_not(tf.logical_and(lo <= zero, zero <= hi)),
                               tf.logical_and(olo <= zero, zero <= ohi))
    lo = tf.where(keep_cval, tf.minimum(lo, zero), lo)
    hi = tf.where(keep_cval, tf.maximum(hi, zero), hi)
    return tf.clip_by_value(out, lo, hi)


def rescaled_size(n: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """``max(round(n * scale), 1)`` (round half to even, as NumPy) as int64."""
    return tf.maximum(tf.cast(tf.round(tf.cast(n, _F64) * scale), tf.int64), 1)


def preprocess(image: tf.Tensor, spacing: tf.Tensor, image_size: Sequence[int],
               target_resolution: Sequence[float]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Normalize, rescale and crop/pad a raw volume (``data.volume_prep.preprocess_volume``, no N4).

    Args:
        image: ``(D, H0, W0)`` float32 raw intensities.
        spacing: ``(2,)`` float32 pixel size in mm along H0 and W0.
        image_size: network size ``(nx, ny)``.
        target_resolution: training pixel size ``(tx, ty)`` in mm.

    Returns:
        ``(x (D, nx, ny) float32, geometry)``; ``geometry`` holds the native and rescaled sizes
        needed by :func:`probabilities_to_native`.
    """
    nx, ny = int(image_size[0]), int(image_size[1])
    shape = tf.shape(image, out_type=tf.int64)  # (3,)
    scale = tf.cast(spacing, _F64) / tf.constant([float(t) for t in target_resolution], _F64)  # (2,)
    x, y = rescaled_size(shape[1], scale[0]), rescaled_size(shape[2], scale[1])
    norm, _, _ = normalize_minmax(image)  # (D, H0, W0) float32
    norm64 = tf.cast(norm, _F64)
    rescaled = tf.einsum("rh,dhw,sw->drs", resize_matrix(x, shape[1]), norm64,
                         resize_matrix(y, shape[2]))  # (D, x, y)
    rescaled = clip_like_skimage(rescaled, norm64, axes=[0, 1, 2])
    out = tf.einsum("ir,drs,js->dij", crop_pad_matrix(nx, x), rescaled, crop_pad_matrix(ny, y))  # (D, nx, ny)
    return tf.cast(out, tf.float32), {"native_h": shape[1], "native_w": shape[2], "rescaled_h": x,
                                      "rescaled_w": y}


def probabilities_to_native(probs: tf.Tensor, geometry: dict[str, tf.Tensor]) -> tf.Tensor:
    """Undo crop/pad and resize ``(D, nx, ny, C)`` probabilities to ``(D, H0, W0, C)`` float64
    (``data.geometry.probabilities_to_native``, clipped per slice as there)."""
    nx, ny = probs.shape[1], probs.shape[2]
    p64 = tf.cast(probs, _F64)
    full = tf.einsum("ir,dijc,js->drsc", crop_pad_matrix(nx, geometry["rescaled_h"]), p64,
                     crop_pad_matrix(ny, geometry["rescaled_w"]))  # (D, x, y, C), 0 where cropped away
    native = tf.einsum("hr,drsc,ws->dhwc", resize_matrix(geometry["native_h"], geometry["rescaled_h"]), full,
                       resize_matrix(geometry["native_w"], geometry["rescaled_w"]))  # (D, H0, W0, C)
    return clip_like_skimage(native, full, axes=[1, 2, 3])


def softmax_in_chunks(model: Callable[..., tf.Tensor], x: tf.Tensor, chunk: int = CHUNK) -> tf.Tensor:
    """Softmax of ``model`` on ``x (D, nx, ny)`` in chunks of ``chunk`` slices -> ``(D, nx, ny, C)``."""
    depth = tf.shape(x)[0]
    n_chunks = (depth + chunk - 1) // chunk
    parts = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False)
    for k in tf.range(n_chunks):
        part = x[k * chunk:(k + 1) * chunk, :, :, None]  # (n, nx, ny, 1)
        parts = parts.write(k, tf.nn.softmax(model(part, training=False), axis=-1))  # (n, nx, ny, C)
    return parts.concat()


def make_segment_volume(model: Any, image_size: Sequence[int], target_resolution: Sequence[float],
                        chunk: int = CHUNK) -> Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """The ``segment_volume`` function: ``(image (D, H0, W0) float32, spacing (2,) float32) ->
    {"labels": (D, H0, W0) int32, "probabilities": (D, H0, W0, C) float32}``.

    Inputs are checked in the graph (``InvalidArgumentError`` with a message): every voxel finite,
    at least one voxel, spacing finite and positive, image not constant.
    """
    size = tuple(int(v) for v in image_size)
    num_classes = int(model.output.shape[-1])

    @tf.function(input_signature=INPUT_SIGNATURE)
    def segment_volume(image: tf.Tensor, spacing: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = [
            tf.debugging.assert_positive(tf.size(image), message="image is empty"),
            tf.debugging.assert_all_finite(image, message="image contains NaN/Inf voxels"),
            tf.debugging.assert_all_finite(spacing, message="spacing must be finite"),
            tf.debugging.assert_positive(spacing, message="spacing must be positive (mm)"),
        ]
        with tf.control_dependencies(checks):
            x, geometry = preprocess(image, spacing, size, target_resolution)  # (D, nx, ny)
        x = tf.ensure_shape(x, [None, size[0], size[1]])
        probs = softmax_in_chunks(model, x, chunk)  # (D, nx, ny, C)
        probs = tf.ensure_shape(probs, [None, size[0], size[1], num_classes])
        native = tf.cast(probabilities_to_native(probs, geometry), tf.float32)  # (D, H0, W0, C)
        # argmax of the float32 values, as data.geometry.labels_to_native
        labels = tf.argmax(native, axis=-1, output_type=tf.int32)  # (D, H0, W0)
        return {"labels": labels, "probabilities": native}

    return segment_volume
