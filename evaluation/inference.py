"""Volume inference and the fast native-resolution validation Dice (no plotting imports).

A *predictor* maps float32 slices ``(N, H, W, 1)`` to softmax probabilities ``(N, H, W, C)`` with
batch normalization in inference mode. It wraps a Keras UNet (:func:`keras_predictor`) or a
SavedModel exported by :mod:`evaluation.export` (``workdir.saved_model_predictor``; models are
loaded by ``workdir.load_model``).

Volumes are predicted in chunks of 20 slices (ORIGINAL_SPEC §6.1) and mapped back to the native
grid with :mod:`data.geometry` (undo crop/pad, linear resize of the probabilities, argmax).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import InputError
from evaluation.metrics import foreground_mean, volume_metrics

CHUNK = 20

Predictor = Callable[[np.ndarray], np.ndarray]

_CACHE_ATTR = "_plc_softmax_predictor"


def keras_predictor(model: Any) -> Predictor:
    """Softmax predictor of a Keras model (inference-mode BN), traced once for any N, H, W.

    The traced function is cached on the model object, so repeated validation calls do not retrace.
    (A cache keyed weakly by the model would never free it: the cached predictor refers to the model.
    The attribute makes a plain reference cycle that the garbage collector frees with the model.)
    """
    cached = getattr(model, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])
    def probs_fn(x):
        return tf.nn.softmax(model(x, training=False), axis=-1)  # (N, H, W, C)

    def predict(x: np.ndarray) -> np.ndarray:
        return probs_fn(tf.convert_to_tensor(x, tf.float32)).numpy()

    try:  # bypass Keras attribute tracking: a plain function is not model state
        object.__setattr__(model, _CACHE_ATTR, predict)
    except (AttributeError, TypeError):
        pass
    return predict


def as_predictor(model: Any) -> Predictor:
    """A predictor for a Keras model, or ``model`` itself if it already is a plain callable."""
    import keras

    return keras_predictor(model) if isinstance(model, keras.Model) else model


def predict_volume(predictor: Predictor, image: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Softmax probabilities of every slice of a preprocessed volume.

    Args:
        predictor: see module docstring.
        image: ``(D, H, W)`` preprocessed image.
        chunk: slices per forward pass.

    Returns:
        ``(D, H, W, C)`` float32 probabilities.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"expected a (D, H, W) volume, got shape {image.shape}")
    outs = [np.asarray(predictor(image[i:i + chunk, :, :, None]), dtype=np.float32)  # (n, H, W, C)
            for i in range(0, image.shape[0], chunk)]
    return np.concatenate(outs, axis=0)


def predict_native(predictor: Predictor, image: np.ndarray, meta: Mapping[str, Any],
                   chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Predict a preprocessed volume and map the labels to its native grid.

    Args:
        predictor: see module docstring.
        image: ``(D, H, W)`` preprocessed image.
        meta: the volume's geometry (``meta.json``).
        chunk: slices per forward pass.

    Returns:
        ``(labels (H0, W0, D) int16 on the native grid, probabilities (D, H, W, C) network grid)``.
    """
    from data import geometry

    probs = predict_volume(predictor, image, chunk)  # (D, H, W, C)
    return geometry.labels_to_native(probs, meta), probs


def label_image_like(labels: np.ndarray, reference: Any) -> Any:
    """An int16 NIfTI of ``labels`` (H0, W0, D) with the affine and header of ``reference``.

    Used for evaluation predictions (reference = the native label file) and ``predict.py`` outputs
    (reference = the input scan): geometry, units, description and orientation codes are kept; the
    data type becomes int16, scaling is reset and the shape follows ``labels`` (a 4-D input gives a
    3-D output).
    """
    import nibabel as nib

    header = reference.header.copy()
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(np.asarray(labels, dtype=np.int16), reference.affine, header)
    img.header.set_slope_inter(1.0, 0.0)
    return img


@dataclass(frozen=True)
class NativePrediction:
    """A stored volume predicted and mapped to its native grid.

    Attributes:
        volume: the preprocessed volume (``data.store.Volume``).
        native: the native label file (nibabel image, original affine and header).
        gt: ``(H0, W0, D)`` int64 native ground truth.
        pred: ``(H0, W0, D)`` int16 native prediction.
        probs: ``(D, H, W, C)`` probabilities on the network grid.
    """

    volume: Any
    native: Any
    gt: np.ndarray
    pred: np.ndarray
    probs: np.ndarray


def predict_stored_volume(predictor: Predictor, data_dir: str | os.PathLike, vid: str,
                          chunk: int = CHUNK) -> NativePrediction:
    """Predict volume ``vid`` of a preprocessed data directory and map it to the native grid.

    Raises:
        InputError: unknown id, missing native label, or a native label whose shape disagrees with
            the geometry in ``meta.json``.
    """
    from data import store

    vol = store.load_volume(data_dir, vid)
    native = store.load_native_label(data_dir, vid)
    gt = np.asarray(native.dataobj).astype(np.int64)  # (H0, W0, D)
    pred, probs = predict_native(predictor, vol.image, vol.meta, chunk)  # (H0, W0, D), (D, H, W, C)
    if gt.shape != pred.shape:
        raise InputError(f"{data_dir}/{vid}: native label shape {gt.shape} differs from the geometry in "
                         f"meta.json {pred.shape}")
    return NativePrediction(volume=vol, native=native, gt=gt, pred=pred, probs=probs)


def native_spacing(native_img: Any) -> tuple[float, float, float]:
    """Voxel size ``(x, y, z)`` in mm from a nibabel image header (z = 1 for 2-D files)."""
    zooms = tuple(float(z) for z in native_img.header.get_zooms()[:3])
    return zooms + (1.0,) * (3 - len(zooms))  # type: ignore[return-value]


def surface_spacing(meta: Mapping[str, Any], native_img: Any) -> tuple[float, float, float] | None:
    """Voxel size in mm for surface distances, or ``None`` when preprocessing recorded it as unknown.

    ``meta.json`` of the ``ssl4mis_h5`` layout (no spacing stored) and of ``original_cropped`` files
    without a slice spacing has ``null`` entries in ``spacing``; then HD95 / ASSD can only be given
    in voxels. Otherwise the header of the native label file is used, as before.
    """
    recorded = meta.get("spacing")
    if isinstance(recorded, (list, tuple)) and any(v is None for v in recorded):
        return None
    return native_spacing(native_img)


@dataclass(frozen=True)
class ValidationResult:
    """Native-resolution Dice of several volumes.

    Attributes:
        ids: volume ids.
        dice: ``(V, C)`` per-volume, per-class Dice (NaN: class absent from GT and prediction).
        volume_scores: ``(V,)`` mean foreground Dice per volume (NaN ignored).
        mean_dice: mean of ``volume_scores`` over volumes (NaN volumes ignored); the model
            selection score of ORIGINAL_SPEC §6.1.
    """

    ids: tuple[str, ...]
    dice: np.ndarray
    volume_scores: np.ndarray
    mean_dice: float


def evaluate_volumes(model: Any, data_dir: str | os.PathLike, ids: Sequence[str], cfg: Any,
                     chunk: int = CHUNK) -> ValidationResult:
    """Fast validation: Dice per class at native resolution (no surface metrics, no files written).

    Args:
        model: a Keras UNet (logits) or a predictor.
        data_dir: preprocessed data directory (``image.nii.gz``, ``meta.json``, ``native_label.nii.gz``).
        ids: volume ids to evaluate (validation ids; never test ids for model selection).
        cfg: the dataset's ``configs.DatasetConfig`` (``num_classes``).
        chunk: slices per forward pass.

    Returns:
        A :class:`ValidationResult`.
    """
    predictor = as_predictor(model)
    dice = []
    for vid in ids:
        p = predict_stored_volume(predictor, data_dir, vid, chunk)
        dice.append(volume_metrics(p.gt, p.pred, cfg.num_classes, (1.0,) * p.gt.ndim, surface=False).dice)
    dice_arr = np.stack(dice) if dice else np.zeros((0, cfg.num_classes))  # (V, C)
    scores = np.array([foreground_mean(d) for d in dice_arr])  # (V,)
    finite = scores[~np.isnan(scores)]
    return ValidationResult(ids=tuple(ids), dice=dice_arr, volume_scores=scores,
                            mean_dice=float(finite.mean()) if finite.size else float("nan"))
