"""JSON files read with one-line errors naming the file, and the ``dataset.json`` of a data dir."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.errors import InputError


def data_root(data_dir: str | os.PathLike) -> Path:
    """``--data_dir`` as a Path (``InputError`` if it is not a directory)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data_dir={data_dir}: directory not found")
    return root


def read_json(path: str | os.PathLike, missing: str, want_object: bool = True) -> Any:
    """A JSON file; one-line ``InputError`` naming it if missing (``"<path>: <missing>"``), not valid
    JSON, or (``want_object``) not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from None
    if want_object and not isinstance(info, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def read_dataset_json(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``dataset.json`` of a data dir (``InputError`` if missing or unreadable)."""
    return read_json(data_root(data_dir) / "dataset.json",
                     "not found; is --data_dir a directory written by data.preprocess?")
