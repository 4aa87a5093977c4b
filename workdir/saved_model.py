"""What a SavedModel folder (written by ``evaluation.export``) is and the metadata it records."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from common.errors import InputError
from workdir import records

METADATA_PATH = os.path.join("assets.extra", "plc_metadata.json")  # written by evaluation.export


def latest_version(export_dir: str | os.PathLike) -> Path | None:
    """The highest numeric version folder of ``export_dir`` holding a ``saved_model.pb`` (None if none)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return None
    versions = sorted((int(p.name), p) for p in export_dir.iterdir()
                      if p.is_dir() and re.fullmatch(r"\d+", p.name) and (p / "saved_model.pb").is_file())
    return versions[-1][1] if versions else None


def saved_model_version(path: Path) -> Path | None:
    """``path`` if it is a SavedModel version folder, else its highest numeric version (None if none)."""
    return path if (path / "saved_model.pb").is_file() else latest_version(path)


def is_saved_model(path: str | os.PathLike) -> bool:
    """True for a SavedModel version folder or a base folder with numeric SavedModel versions."""
    return saved_model_version(Path(path)) is not None


def saved_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``assets.extra/plc_metadata.json`` of a SavedModel (version or base folder); {} if absent.

    Raises:
        InputError: ``path`` is not a SavedModel, or the metadata file is invalid.
    """
    version = saved_model_version(Path(path))
    if version is None:
        raise InputError(f"{path}: not a SavedModel (no saved_model.pb)")
    meta_path = version / METADATA_PATH
    if not meta_path.is_file():
        return {}
    meta = records.read_json(meta_path)
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object")
    return meta
