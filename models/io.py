"""Load a trained UNet from a stage workdir or a ``.weights.h5`` file (docs/INTERFACES.md)."""
from __future__ import annotations

import json
import os

import keras

from common.errors import InputError
from models.unet import build_unet

WEIGHTS_NAME = "model.weights.h5"
WEIGHT_SUBDIRS = ("best", "final")


def _num_classes_from_config(config_path: str) -> int | None:
    """``num_classes`` from a workdir's ``config.json`` (top level, or via its ``dataset`` name)."""
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"{config_path}: cannot read JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise InputError(f"{config_path}: expected a JSON object")
    for key in ("num_classes",):
        if key in config:
            return int(config[key])
    for sub in config.values():
        if isinstance(sub, dict) and "num_classes" in sub:
            return int(sub["num_classes"])
    if "dataset" in config:
        try:
            from configs import get_config
        except ImportError:
            return None
        try:
            return int(get_config(str(config["dataset"])).num_classes)
        except InputError as exc:
            raise InputError(f"{config_path}: no num_classes and {exc}") from None
    return None


def find_weights(path: str) -> str:
    """The weights file a workdir or file path designates (``best/`` first, then ``final/``).

    Raises:
        InputError: nothing loadable at ``path``.
    """
    if os.path.isfile(path):
        if not path.endswith(".weights.h5"):
            raise InputError(f"{path}: expected a .weights.h5 file or a stage workdir")
        return path
    if os.path.isdir(path):
        for sub in WEIGHT_SUBDIRS:
            candidate = os.path.join(path, sub, WEIGHTS_NAME)
            if os.path.isfile(candidate):
                return candidate
        raise InputError(f"{path}: no {'/ or '.join(WEIGHT_SUBDIRS)}/{WEIGHTS_NAME} in this workdir "
                         f"(has the stage finished?)")
    raise InputError(f"{path}: no such file or directory")


def load_unet(path: str, num_classes: int | None = None,
              image_size: tuple[int | None, int | None] = (None, None)) -> keras.Model:
    """Build a UNet and load trained weights into it.

    Args:
        path: a stage workdir (``best/model.weights.h5`` preferred, else ``final/model.weights.h5``;
            ``config.json`` supplies ``num_classes``) or a ``.weights.h5`` file.
        num_classes: number of classes; required for a bare weights file unless a ``config.json``
            sits in its directory or the one above (``W/best/model.weights.h5`` -> ``W/config.json``).
        image_size: input size of the built model (``None`` = dynamic).

    Returns:
        The UNet with the weights loaded.

    Raises:
        InputError: nothing loadable, unknown ``num_classes``, or weights that do not fit.
    """
    path = os.fspath(path)
    weights = find_weights(path)
    if num_classes is None:
        candidates = [os.path.join(path, "config.json")] if os.path.isdir(path) else []
        wdir = os.path.dirname(os.path.abspath(weights))
        candidates += [os.path.join(wdir, "config.json"), os.path.join(os.path.dirname(wdir), "config.json")]
        for cand in candidates:
            num_classes = _num_classes_from_config(cand)
            if num_classes is not None:
                break
    if num_classes is None:
        raise InputError(f"{path}: number of classes unknown (no config.json with num_classes); "
                         f"pass num_classes")
    model = build_unet(int(num_classes), image_size)
    try:
        model.load_weights(weights)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{weights}: cannot load UNet weights for {num_classes} classes ({first})") from exc
    return model
