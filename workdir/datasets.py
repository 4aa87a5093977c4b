"""The dataset config that goes with a model (built-in by name; ``custom`` as recorded or from a data dir)."""
from __future__ import annotations

import os
from typing import Any

import configs
from common.errors import InputError
from workdir import records
from workdir.saved_model import is_saved_model, saved_model_metadata


def recorded_dataset_config(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The dataset config recorded with a model: ``dataset_config`` of its workdir ``config.json``
    (written by training) or of its SavedModel metadata (written by the export); None if absent."""
    if is_saved_model(model_path):
        value = saved_model_metadata(model_path).get("dataset_config")
    else:
        workdir = records.find_workdir(model_path)
        value = records.read_config(workdir).get("dataset_config") if workdir is not None else None
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
    if dataset != configs.custom.NAME:
        return configs.get_config(dataset)
    recorded = recorded_dataset_config(model_path)
    if data_dir is None:
        if recorded is not None:
            return configs.get_config(dataset, recorded=recorded)
        data_dir = records.run_info(model_path).data_dir
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
