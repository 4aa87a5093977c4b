"""TensorBoard scalar and image summaries without the ``tensorboard`` package.

``tensorflow-cpu`` 2.21 no longer installs TensorBoard, and ``tf.summary.scalar`` / ``image`` then
raise. The event files TensorBoard reads only need ``tf.summary.write`` (in TensorFlow core) with
the plugin metadata of the scalars / images plugins, which is what this module writes; the files
open in any TensorBoard installation (``pip install tensorboard; tensorboard --logdir W``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin: str) -> bytes:
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    meta.plugin_data.content = b""
    return meta.SerializeToString()


_SCALAR_META = _metadata("scalars")
_IMAGE_META = _metadata("images")


def scalar(name: str, value: float, step: int) -> None:
    """Write one scalar to the default summary writer."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=int(step), metadata=_SCALAR_META)


def images(name: str, batch: np.ndarray, step: int, max_outputs: int = 4) -> None:
    """Write up to ``max_outputs`` images ``(N, H, W, 3)`` uint8 as PNGs to the default writer."""
    batch = np.asarray(batch, dtype=np.uint8)[:max_outputs]  # (n, H, W, 3)
    pngs = [tf.io.encode_png(img) for img in batch]
    h, w = batch.shape[1], batch.shape[2]
    tensor = tf.stack([tf.constant(str(w)), tf.constant(str(h))] + pngs)  # (2 + n,) strings
    tf.summary.write(name, tensor, step=int(step), metadata=_IMAGE_META)


def overlay_images(images: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """``(N,H,W)`` image, GT, prediction -> ``(N, H, 3W, 3)`` uint8 panels [image | GT | pred].

    Labels are drawn with a fixed colour per class over the grey image.
    """
    colours = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.float32)
    img = images.astype(np.float32)
    lo, hi = np.percentile(img, 1), np.percentile(img, 99)
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)[..., None] * 255.0  # (N, H, W, 1)
    grey = np.repeat(grey, 3, axis=-1)  # (N, H, W, 3)

    def paint(lab):
        col = colours[np.clip(lab, 0, len(colours) - 1) % len(colours)]  # (N, H, W, 3)
        mask = (lab > 0)[..., None]
        return np.where(mask, 0.5 * grey + 0.5 * col, grey)

    panel = np.concatenate([grey, paint(labels), paint(preds)], axis=2)  # (N, H, 3W, 3)
    return panel.astype(np.uint8)
