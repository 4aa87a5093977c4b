"""Helpers for the model tests."""
from __future__ import annotations

import keras


def count_params(model: keras.Model, prefix: str = "") -> int:
    """Number of trainable scalars in the layers of ``model`` whose name starts with ``prefix``."""
    return sum(int(v.numpy().size) for layer in model.layers if layer.name.startswith(prefix)
               for v in layer.trainable_weights)
