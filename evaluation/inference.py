"""Volume inference and the fast native-resolution validation Dice (no plotting imports).

A *predictor* maps float32 slices ``(N, H, W, 1)`` to softmax probabilities ``(N, H, W, C)`` with
batch normalization in inference mode. It wraps a Keras UNet (:func:`keras_predictor`) or a
SavedModel exported by :mod:`evaluation.export` (:func:`saved_model_predictor`).

Volumes are predicted in chunks of 20 slices (ORIGINAL_SPEC §6.1) and mapped back to the native
grid with :mod:`data.geometry` (undo crop/pad, linear resize of the probabilities, argmax).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import InputError
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


def saved_model_predictor(path: str | os.PathLike) -> Predictor:
    """Predictor of a SavedModel version folder (its ``serving_default`` signature)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load SavedModel ({str(exc).splitlines()[0]})") from None
    if "serving_default" not in loaded.signatures:
        raise InputError(f"{path}: SavedModel has no 'serving_default' signature")
    fn = loaded.signatures["serving_default"]

    def predict(x: np.ndarray) -> np.ndarray:
        out = fn(images=tf.convert_to_tensor(x, tf.float32))
        return out["probabilities"].numpy()

    predict.saved_model = loaded  # keep the loaded object alive  # type: ignore[attr-defined]
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


# ---------------------------------------------------------------- model loading (scripts)


def is_saved_model(path: str | os.PathLike) -> bool:
    """True for a SavedModel folder or a base folder with numeric SavedModel versions."""
    from evaluation.export import latest_version

    p = Path(path)
    return (p / "saved_model.pb").is_file() or latest_version(p) is not None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read JSON ({exc})") from None
    return data if isinstance(data, dict) else None


def find_workdir(model_path: str | os.PathLike) -> Path | None:
    """The stage workdir (folder with ``config.json``) a model path is, or lies in, up to two levels."""
    p = Path(model_path).resolve()
    candidates = [p] if p.is_dir() else []
    candidates += [p.parent, p.parent.parent]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    return None


def workdir_config(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``config.json`` of the workdir a model path belongs to (workdir, its subfolder or file)."""
    workdir = find_workdir(model_path)
    return None if workdir is None else _read_json(workdir / "config.json")


def config_value(config: Mapping[str, Any] | None, key: str) -> Any:
    """A value from a workdir config, at the top level or one level down (e.g. under ``flags``)."""
    if not config:
        return None
    if key in config:
        return config[key]
    for sub in config.values():
        if isinstance(sub, Mapping) and key in sub:
            return sub[key]
    return None


def load_model_and_dataset(model_path: str, dataset: str | None = None,
                           data_dir: str | os.PathLike | None = None) -> tuple[Any, str | None]:
    """Load a model from a workdir, a ``.weights.h5`` file or a SavedModel folder.

    Args:
        model_path: workdir (``best/`` preferred, then ``final/``), weights file, training checkpoint
            folder ``W/ckpt`` (newest checkpoint) or prefix, SavedModel version folder or SavedModel
            base folder (the highest version is used).
        dataset: dataset name overriding the one recorded with the model.
        data_dir: preprocessed data directory (a ``custom`` dataset's config, when the model
            records neither its class count nor its dataset config).

    Returns:
        ``(model, dataset)``: a Keras model, or a predictor for a SavedModel; the dataset name from
        the argument, the workdir ``config.json`` or the SavedModel metadata (None if unknown).
    """
    from evaluation.export import METADATA_PATH, latest_version

    p = Path(model_path)
    if not p.exists() and not Path(str(p) + ".index").is_file():
        raise InputError(f"--model: {model_path} does not exist")
    if is_saved_model(p):
        version = p if (p / "saved_model.pb").is_file() else latest_version(p)
        meta = _read_json(version / METADATA_PATH) or {}
        return saved_model_predictor(version), dataset or meta.get("dataset")
    from models.io import load_unet

    config = workdir_config(p)
    dataset = dataset or config_value(config, "dataset")
    num_classes = config_value(config, "num_classes")
    if num_classes is None and dataset is not None:
        num_classes = model_dataset_config(str(dataset), p, data_dir).num_classes
    if (p.is_dir() and (p / "checkpoint").is_file()) or Path(str(p) + ".index").is_file():
        return load_checkpoint_unet(checkpoint_prefix(p), num_classes), dataset
    return load_unet(str(p), num_classes=None if num_classes is None else int(num_classes)), dataset


def recorded_dataset_config(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The dataset config recorded with a model: ``dataset_config`` of its workdir ``config.json``
    (written by training) or of its SavedModel metadata (written by the export); None if absent."""
    from evaluation.export import METADATA_PATH, latest_version

    p = Path(model_path)
    if p.exists() and is_saved_model(p):
        version = p if (p / "saved_model.pb").is_file() else latest_version(p)
        value = (_read_json(version / METADATA_PATH) or {}).get("dataset_config")
    else:
        value = config_value(workdir_config(p), "dataset_config")
    return value if isinstance(value, dict) else None


def model_dataset_config(dataset: str, model_path: str | os.PathLike, data_dir: str | os.PathLike | None = None):
    """The ``configs.DatasetConfig`` to use with a model.

    Built-in datasets: by name. ``custom``: from ``data_dir``'s ``dataset.json`` when ``data_dir`` is
    given (evaluation), else as recorded with the model (:func:`recorded_dataset_config`), else from
    the ``data_dir`` its workdir ``config.json`` names. When both the data dir and the model record
    one, classes, image size and resolution must agree (the model would see other data than it
    was trained on).

    Raises:
        InputError: unknown dataset, no config found, or a data dir that does not fit the model.
    """
    import configs

    if dataset != configs.custom.NAME:
        return configs.get_config(dataset)
    recorded = recorded_dataset_config(model_path)
    if data_dir is None:
        if recorded is not None:
            return configs.get_config(dataset, recorded=recorded)
        data_dir = config_value(workdir_config(model_path), "data_dir")
        if not data_dir:
            raise InputError(f"--model={model_path}: no dataset config recorded with this custom-dataset model; "
                             "pass --data_dir (the preprocessed data directory)")
    cfg = configs.get_config(dataset, data_dir)
    if recorded is not None:
        trained = configs.get_config(dataset, recorded=recorded)
        keys = ("num_classes", "image_size", "target_resolution")
        diffs = [f"{k} {getattr(trained, k)} vs {getattr(cfg, k)}" for k in keys
                 if getattr(trained, k) != getattr(cfg, k)]
        if diffs:
            raise InputError(f"--data_dir={data_dir}: preprocessed differently from the data --model={model_path} "
                             f"was trained on ({'; '.join(diffs)})")
    return cfg


def checkpoint_prefix(path: str | os.PathLike) -> str | None:
    """The newest TF checkpoint of a ``W/ckpt`` folder, or ``path`` itself if it is a checkpoint prefix."""
    import tensorflow as tf

    p = Path(path)
    if p.is_dir() and (p / "checkpoint").is_file():
        try:
            return tf.train.latest_checkpoint(str(p))
        except ValueError:  # empty or corrupt index file
            return None
    if Path(str(p) + ".index").is_file():
        return str(p)
    return None


def load_checkpoint_unet(prefix: str | None, num_classes: Any) -> Any:
    """Build a UNet and restore it from the ``model`` entry of a training checkpoint (``W/ckpt``).

    Lets ``evaluate.py`` / ``predict.py`` use the latest state of a running or interrupted stage.

    Raises:
        InputError: no checkpoint, unknown number of classes, or a checkpoint whose ``model`` does not
            fit the UNet (every UNet variable must be restored).
    """
    import tensorflow as tf

    from models.unet import build_unet

    if prefix is None:
        raise InputError("--model: checkpoint folder holds no checkpoint yet")
    if num_classes is None:
        raise InputError(f"--model={prefix}: number of classes unknown (no config.json); pass --dataset")
    model = build_unet(int(num_classes))
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--model={prefix}: cannot restore a {num_classes}-class UNet ({first})") from None
    return model
