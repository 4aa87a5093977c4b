"""Which weights a path holds, and the one model loader.

A *model path* is one of

* a stage workdir ``W`` (its ``best/model.weights.h5``, else ``final/model.weights.h5``, with a
  warning for a stage that validates);
* a ``.weights.h5`` file (``build_unet``-compatible);
* a training checkpoint: the ``W/ckpt`` folder (its newest checkpoint) or a prefix ``W/ckpt/ckpt-3``
  (the ``model=`` entry is restored);
* a SavedModel written by ``evaluation.export``: a version folder (``saved_model.pb``) or a base folder
  of numeric versions (the highest is used); ``assets.extra/plc_metadata.json`` records the dataset.

:func:`model_source` says which of these a path is without loading anything; :func:`load_model`
loads it (a Keras UNet, or a predictor for a SavedModel) together with its dataset name. The number
of classes of a UNet is the argument, else ``num_classes`` of the workdir's ``config.json``, else
that of the given dataset, else that of the config's dataset.

TensorFlow and Keras are imported inside the functions that need them, so that scripts can check
their arguments without loading TensorFlow.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

import numpy as np

from common.errors import InputError, warn
from workdir import records
from workdir.datasets import model_dataset_config
from workdir.saved_model import saved_model_metadata, saved_model_version

WEIGHTS_NAME = "model.weights.h5"
FINAL_DIR = "final"
WEIGHT_SUBDIRS = (records.BEST_DIR, FINAL_DIR)  # in order of preference

ModelKind = Literal["weights", "checkpoint", "saved_model"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------- writing


def save_weights_atomic(model: Any, path: str | os.PathLike) -> None:
    """``model.save_weights`` to a temporary ``.weights.h5`` sibling, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.weights.h5", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # keras refuses to overwrite silently in some versions; write a fresh file
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_best(model: Any, workdir: str | os.PathLike, step: int, val_dice: float,
              extra: dict | None = None) -> None:
    """Write ``W/best/model.weights.h5``, then ``W/best/best.json`` (``{"step", "val_dice", **extra}``)."""
    save_weights_atomic(model, Path(workdir) / records.BEST_DIR / WEIGHTS_NAME)
    records.write_best_record(workdir, step, val_dice, extra)


def save_final(model: Any, workdir: str | os.PathLike) -> None:
    """Write ``W/final/model.weights.h5`` (the UNet at the end of the stage)."""
    save_weights_atomic(model, Path(workdir) / FINAL_DIR / WEIGHTS_NAME)


# ------------------------------------------------------------------------ what a path holds


class ModelSource(NamedTuple):
    """What a model path designates.

    Attributes:
        kind: ``"weights"`` (a ``.weights.h5`` file), ``"checkpoint"`` (a TF checkpoint prefix) or
            ``"saved_model"`` (a SavedModel version folder).
        path: the weights file, the checkpoint prefix or the version folder.
        workdir: the stage workdir the given path belongs to (None for none).
    """

    kind: ModelKind
    path: Path
    workdir: Path | None


def _checkpoint_prefix(path: Path) -> Path | None:
    """The newest checkpoint of a folder with a ``checkpoint`` index file, or None."""
    import tensorflow as tf

    try:
        prefix = tf.train.latest_checkpoint(str(path))
    except (ValueError, tf.errors.OpError):  # empty or corrupt index file
        return None
    return None if prefix is None else Path(prefix)


# Stages that keep W/best (they validate); the others' model is W/final.
VALIDATING_STAGES = ("baseline", "joint")
_WARNED: set[Path] = set()


def _warn_no_best(workdir: Path, final: Path) -> None:
    """One line (once per workdir and process) when a validating stage's workdir has no ``best/``."""
    try:
        stage = records.stage_of(workdir) if records.has_config(workdir) else None
    except InputError:
        stage = None
    if stage in VALIDATING_STAGES and workdir.resolve() not in _WARNED:
        _WARNED.add(workdir.resolve())
        warn(f"{workdir}: no {records.BEST_DIR}/{WEIGHTS_NAME} (no validation was saved); using {final}, "
             f"the model at the end of the stage")


def model_source(path: str | os.PathLike) -> ModelSource:
    """Which weights ``path`` holds (see the module docstring for the accepted paths).

    Raises:
        InputError: nothing loadable at ``path`` (missing, a file that is not ``.weights.h5``, a
            checkpoint folder without checkpoint, a workdir without ``best/`` or ``final/`` weights).
    """
    p = Path(path)
    is_prefix = Path(f"{p}.index").is_file()
    if not p.exists() and not is_prefix:
        raise InputError(f"{p}: no such file or directory")
    workdir = records.find_workdir(p)
    if p.is_dir():
        version = saved_model_version(p)
        if version is not None:
            return ModelSource("saved_model", version, workdir)
        if (p / "checkpoint").is_file():
            prefix = _checkpoint_prefix(p)
            if prefix is None:
                raise InputError(f"{p}: checkpoint folder holds no checkpoint yet")
            return ModelSource("checkpoint", prefix, workdir)
        for sub in WEIGHT_SUBDIRS:
            candidate = p / sub / WEIGHTS_NAME
            if candidate.is_file():
                if sub == FINAL_DIR:
                    _warn_no_best(p, candidate)
                return ModelSource("weights", candidate, workdir)
        raise InputError(f"{p}: no {'/ or '.join(WEIGHT_SUBDIRS)}/{WEIGHTS_NAME} in this workdir "
                         f"(has the stage finished?)")
    if is_prefix:
        return ModelSource("checkpoint", p, workdir)
    if not p.name.endswith(".weights.h5"):
        raise InputError(f"{p}: expected a .weights.h5 file, a stage workdir, a training checkpoint "
                         f"or a SavedModel")
    return ModelSource("weights", p, workdir)


# --------------------------------------------------------------------------------- loading


def saved_model_predictor(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """Predictor ``(N,H,W,1) float32 -> (N,H,W,C)`` softmax of a SavedModel version folder (its
    ``serving_default`` signature)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load SavedModel ({_first_line(exc)})") from None
    if "serving_default" not in loaded.signatures:
        raise InputError(f"{path}: SavedModel has no 'serving_default' signature")
    fn = loaded.signatures["serving_default"]

    def predict(x: np.ndarray) -> np.ndarray:
        out = fn(images=tf.convert_to_tensor(x, tf.float32))
        return out["probabilities"].numpy()  # (N, H, W, C)

    predict.saved_model = loaded  # keep the loaded object alive  # type: ignore[attr-defined]
    return predict


def restore_checkpoint(prefix: str | os.PathLike, **objects: Any) -> None:
    """Restore only ``objects`` (e.g. ``model=unet``) from a checkpoint written by the training
    engine; every variable of ``objects`` must be in it (other entries, e.g. the optimizer, are
    ignored).

    Raises:
        InputError: the checkpoint cannot be read or does not hold ``objects``.
    """
    try:
        _restore(prefix, objects)
    except _restore_errors() as exc:
        raise InputError(f"{prefix}: cannot restore {', '.join(objects)} ({_first_line(exc)})") from None


def _restore_errors() -> tuple[type[BaseException], ...]:
    import tensorflow as tf

    return (AssertionError, ValueError, tf.errors.OpError)


def _restore(prefix: str | os.PathLike, objects: dict[str, Any]) -> None:
    import tensorflow as tf

    status = tf.train.Checkpoint(**objects).restore(str(prefix))
    status.expect_partial().assert_existing_objects_matched()


class LoadedModel(NamedTuple):
    """Result of :func:`load_model`.

    Attributes:
        model: a Keras UNet (logits), or a predictor (softmax) for a SavedModel.
        dataset: dataset name (argument, workdir config.json or SavedModel metadata; None if unknown).
    """

    model: Any
    dataset: str | None


def _build(source: ModelSource, num_classes: int | None, dataset: str | None,
           image_size: tuple[int | None, int | None], data_dir: str | os.PathLike | None = None,
           precision: str | None = None) -> Any:
    """A UNet with the weights of a ``weights`` / ``checkpoint`` source, built under the Keras dtype
    policy of ``precision`` (None: the current global policy)."""
    import contextlib

    from models.precision import precision_policy
    from models.unet import build_unet

    if num_classes is None and source.workdir is not None:
        num_classes = records.num_classes_of(source.workdir, dataset)
    elif num_classes is None and dataset is not None:
        num_classes = int(model_dataset_config(dataset, source.path, data_dir).num_classes)
    if num_classes is None:
        raise InputError(f"{source.path}: number of classes unknown (no config.json with num_classes "
                         f"or dataset); pass --dataset")
    with precision_policy(precision) if precision is not None else contextlib.nullcontext():
        model = build_unet(int(num_classes), image_size)
    if source.kind == "checkpoint":
        try:
            _restore(source.path, {"model": model})
        except _restore_errors() as exc:
            raise InputError(f"{source.path}: cannot restore a {num_classes}-class UNet "
                             f"({_first_line(exc)})") from None
        return model
    try:
        model.load_weights(str(source.path))
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{source.path}: cannot load UNet weights for {num_classes} classes "
                         f"({_first_line(exc)})") from None
    return model


def load_model(path: str | os.PathLike, dataset: str | None = None, num_classes: int | None = None,
               image_size: tuple[int | None, int | None] = (None, None),
               data_dir: str | os.PathLike | None = None, precision: str | None = None) -> LoadedModel:
    """Load the model a path holds (the one loader of the project).

    Args:
        path: a model path (module docstring).
        dataset: dataset name overriding the recorded one (it also gives the number of classes when
            the workdir's config.json records none).
        num_classes: classes of the UNet (default: recorded with the model).
        image_size: input size of the built UNet (None = dynamic).
        data_dir: preprocessed data directory (a ``custom`` dataset's config, when the model records
            neither its class count nor its dataset config).
        precision: ``--precision`` of the built UNet (:mod:`models.precision`; None: the current
            Keras dtype policy). A SavedModel runs at the precision it was exported with: a
            different one given here is an error.

    Returns:
        ``(model, dataset)``.

    Raises:
        InputError: nothing loadable, unknown number of classes, weights that do not fit, or a
            SavedModel exported at another precision than ``precision``.
    """
    source = model_source(path)
    if source.kind == "saved_model":
        meta = saved_model_metadata(source.path)
        exported = meta.get("precision", "fp32")
        if precision is not None and precision != exported:
            raise InputError(f"--precision={precision}: {source.path} is a SavedModel exported at {exported}, "
                             f"which it always runs at; omit --precision or export again")
        return LoadedModel(saved_model_predictor(source.path), dataset or meta.get("dataset"))
    recorded = records.run_info(source.workdir).dataset if source.workdir is not None else None
    return LoadedModel(_build(source, num_classes, dataset, image_size, data_dir, precision), dataset or recorded)


def load_unet(path: str | os.PathLike, num_classes: int | None = None,
              image_size: tuple[int | None, int | None] = (None, None), precision: str | None = None) -> Any:
    """The Keras UNet of a workdir, ``.weights.h5`` file or training checkpoint (:func:`load_model`
    restricted to Keras models, e.g. for ``--init_from``), built at ``precision`` (None: the current
    Keras dtype policy).

    Raises:
        InputError: as :func:`load_model`, or ``path`` is a SavedModel.
    """
    source = model_source(path)
    if source.kind == "saved_model":
        raise InputError(f"{path}: is a SavedModel; a stage workdir, a .weights.h5 file or a training "
                         f"checkpoint is needed here")
    return _build(source, num_classes, None, image_size, precision=precision)
