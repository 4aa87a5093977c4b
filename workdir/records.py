"""The JSON files of a stage workdir: ``config.json``, ``best/best.json``, ``summary.json``,
``metrics.json``, and the ``eval_<split>/summary.json`` that ``evaluate.py`` writes.

Every reader raises a one-line :class:`common.errors.InputError` naming the file when a required file
is missing, is not valid JSON or does not have the expected shape. ``config.json`` is flat: the
resolved flags of the stage plus the dataset's fixed properties (``num_classes``, ``image_size``,
``struct_names``), all at the top level.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json
from common.errors import InputError

CONFIG = "config.json"
SUMMARY = "summary.json"
METRICS = "metrics.json"
BEST_DIR = "best"
BEST_JSON = "best.json"

# Default of ``train_pretrain.py --no_of_decoder_blocks`` (the flag table, training.flags, takes it from
# here: a workdir below the training layer reads it): a local workdir whose config.json lacks the key
# was trained with it.
DEFAULT_DECODER_BLOCKS = 3


def read_json(path: str | os.PathLike) -> Any:
    """The parsed contents of a JSON file.

    Raises:
        InputError: missing, unreadable or invalid file (one line naming it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _read_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def json_safe(value: Any) -> Any:
    """``value`` with numbers as plain floats (integers and booleans kept as such) and non-finite
    numbers as None (strict JSON)."""
    if isinstance(value, (list, tuple)):
        return [json_safe(x) for x in value]
    if isinstance(value, dict):
        return {k: json_safe(x) for k, x in value.items()}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"
                                  and getattr(value, "ndim", 1) == 0):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None


# ------------------------------------------------------------------------------- config.json


def config_path(workdir: str | os.PathLike) -> Path:
    """``W/config.json``."""
    return Path(workdir) / CONFIG


def has_config(workdir: str | os.PathLike) -> bool:
    """Whether ``workdir`` holds a ``config.json`` (i.e. is a stage workdir)."""
    return config_path(workdir).is_file()


# Settings a stage may be rerun with in a workdir that holds a run with other values (how long and how
# often it runs, where its files are), checked by write_or_check_config; any other recorded setting
# must be equal, or the rerun be forced with --override_config.
LENGTH_KEYS = ("n_iter", "rounds", "n_iter_per_round")  # may grow: a longer run continues the old one
SCHEDULE_KEYS = ("max_steps", "val_every", "ckpt_every", "log_every", "jit_compile",
                 "crf_workers")  # when it validates / saves / logs, how it runs: not what it computes
PLACE_KEYS = ("workdir", "init_from", "pseudo_label_dir")  # paths of this and earlier stages (may move)
PATH_KEYS = ("data_dir",)  # compared as the directories they name
HISTORY_KEY = "config_history"  # list of {"time", "changes": {key: [old, new]}, "override_config"}
UNCOMPARED_KEYS = (HISTORY_KEY, "override_config")


def _same_path(old: Any, new: Any) -> bool:
    if old == new:
        return True
    if not isinstance(old, str) or not isinstance(new, str):
        return False
    return os.path.realpath(old) == os.path.realpath(new)


def config_changes(old: dict[str, Any], new: dict[str, Any], shape_keys: tuple[str, ...]
                   ) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """The differences between a recorded ``config.json`` and the config of a rerun.

    Keys absent on either side (flags added or removed since) are not compared.

    Returns:
        ``(shape, settings, schedule)``, each ``{key: (old, new)}``: changed ``shape_keys`` (the
        checkpoints do not fit), changed training settings (every other key, a shrunk
        :data:`LENGTH_KEYS` value included) and changes a rerun may make (grown lengths,
        :data:`SCHEDULE_KEYS`, :data:`PLACE_KEYS`).
    """
    new = json.loads(json.dumps(new))  # compare as recorded (tuples -> lists, ...)
    shape: dict[str, tuple[Any, Any]] = {}
    settings: dict[str, tuple[Any, Any]] = {}
    schedule: dict[str, tuple[Any, Any]] = {}
    for key in new:
        if key in UNCOMPARED_KEYS or key not in old:
            continue
        a, b = old[key], new[key]
        if (_same_path(a, b) if key in PATH_KEYS else a == b):
            continue
        if key in shape_keys:
            shape[key] = (a, b)
        elif key in SCHEDULE_KEYS or key in PLACE_KEYS:
            schedule[key] = (a, b)
        elif key in LENGTH_KEYS and isinstance(a, (int, float)) and isinstance(b, (int, float)) and b >= a:
            schedule[key] = (a, b)
        else:
            settings[key] = (a, b)
    return shape, settings, schedule


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" + (" (may only grow)" if k in LENGTH_KEYS else "")
                     for k, (a, b) in changes.items())


def write_or_check_config(workdir: str | os.PathLike, config: dict[str, Any], shape_keys: tuple[str, ...],
                          is_chief: bool = True, override: bool = False) -> dict[str, tuple[Any, Any]]:
    """Write ``W/config.json``, or refuse a workdir whose config.json records other settings.

    A rerun in a workdir that holds a ``config.json`` resumes (or redoes) that run, so it must run
    under the recorded settings: a changed ``shape_keys`` value is always refused (the checkpoints do
    not fit), any other changed setting unless ``override`` (``--override_config``); lengths may grow
    and :data:`SCHEDULE_KEYS` / :data:`PLACE_KEYS` may change (:func:`config_changes`). Every change
    is appended to the ``config_history`` of the written file.

    Args:
        workdir: the stage workdir.
        config: resolved flags and dataset settings (JSON-serializable, flat).
        shape_keys: keys whose change makes the existing checkpoints unusable (model / head shapes,
            stage, dataset, ...).
        is_chief: only the chief writes.
        override: resume under changed training settings (``--override_config``).

    Returns:
        The training settings ``override`` let change, ``{key: (old, new)}`` (empty for a new
        workdir, the same settings or only rerun changes).

    Raises:
        InputError: the workdir's config.json is unreadable, not valid JSON or not an object (it is
            never replaced), or records other shape keys, or other settings without ``override``;
            nothing is written then.
    """
    path = config_path(workdir)
    settings: dict[str, tuple[Any, Any]] = {}
    record = dict(config)
    if path.exists():
        old = _read_object(path)
        shape, settings, schedule = config_changes(old, config, tuple(shape_keys))
        if shape:
            raise InputError(f"--workdir {workdir}: holds a run with a different configuration "
                             f"({_describe(shape)}); use a new --workdir or delete it")
        if settings and not override:
            raise InputError(f"--workdir {workdir}: holds a run with other training settings "
                             f"({_describe(settings)}); use the recorded settings, a new --workdir, or "
                             f"--override_config to resume it under the new ones")
        changes = {**settings, **schedule}
        history = list(old.get(HISTORY_KEY) or [])
        if changes:
            import datetime

            history.append({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            "changes": {k: [a, b] for k, (a, b) in changes.items()},
                            "override_config": bool(settings)})
        if history:
            record[HISTORY_KEY] = history
    if is_chief:
        atomic_write_json(path, record)
    return settings


def read_config(workdir: str | os.PathLike) -> dict[str, Any]:
    """``W/config.json`` of a stage workdir.

    Raises:
        InputError: no config.json (not a stage workdir), invalid JSON or not an object.
    """
    path = config_path(workdir)
    if not path.is_file():
        raise InputError(f"{path}: not found ({workdir} is not a stage workdir)")
    return _read_object(path)


def find_workdir(path: str | os.PathLike) -> Path | None:
    """The stage workdir a path is or lies in: the nearest of ``path`` (a folder), its parent and its
    grandparent holding a ``config.json`` (``W``, ``W/best/model.weights.h5``, ``W/ckpt``,
    ``W/ckpt/ckpt-3``); None if there is none."""
    p = Path(path).resolve()
    candidates = ([p] if p.is_dir() else []) + [p.parent, p.parent.parent]
    return next((c for c in candidates if has_config(c)), None)


def _num_classes(config: dict[str, Any], path: Path, dataset: str | None = None) -> int | None:
    """``num_classes`` of a config, else that of its (or the given) dataset; None if neither."""
    if config.get("num_classes") is not None:
        return _typed(config, "num_classes", int, path)
    name = dataset or config.get("dataset")
    if name is None:
        return None
    from configs import get_config

    try:
        return int(get_config(str(name), config.get("data_dir")).num_classes)  # custom: its data dir
    except InputError as exc:
        if dataset is not None:
            raise
        raise InputError(f"{path}: no num_classes and {exc}") from None


def _typed(config: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """``config[key]`` converted to ``kind`` (None stays None)."""
    value = config.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, bool) or isinstance(value, (dict, list)):
        raise InputError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {key} must be {kind.__name__}, got {value!r}") from None


def stage_of(workdir: str | os.PathLike) -> str:
    """The stage (``global``, ``local``, ``baseline``, ``pseudolabel``, ``joint``) that wrote ``workdir``.

    Raises:
        InputError: no or invalid config.json, or no ``stage`` in it.
    """
    config = read_config(workdir)
    stage = _typed(config, "stage", str, config_path(workdir))
    if not stage:
        raise InputError(f"{config_path(workdir)}: no 'stage' (not written by a training stage)")
    return stage


def decoder_blocks_of(workdir: str | os.PathLike) -> int:
    """Decoder blocks ``l`` pre-trained in a local-stage workdir (``--no_of_decoder_blocks``;
    default :data:`DEFAULT_DECODER_BLOCKS`, the flag's default, when config.json lacks it).

    Raises:
        InputError: no or invalid config.json, or a value outside 1..5.
    """
    path = config_path(workdir)
    blocks = _typed(read_config(workdir), "no_of_decoder_blocks", int, path)
    blocks = DEFAULT_DECODER_BLOCKS if blocks is None else blocks
    if not 1 <= blocks <= 5:
        raise InputError(f"{path}: no_of_decoder_blocks must be in 1..5, got {blocks}")
    return blocks


def num_classes_of(workdir: str | os.PathLike, dataset: str | None = None) -> int:
    """Number of classes of the UNet trained in ``workdir``: ``num_classes`` of config.json, else
    that of ``dataset`` (an override) or of the config's ``dataset``.

    Raises:
        InputError: no or invalid config.json, neither key, or an unknown dataset.
    """
    path = config_path(workdir)
    n = _num_classes(read_config(workdir), path, dataset)
    if n is None:
        raise InputError(f"{path}: number of classes unknown (no num_classes and no dataset)")
    return n


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What scripts read from the config.json of the workdir a model path belongs to.

    Every field is None when the path is not in a stage workdir or the key is absent.

    Attributes:
        workdir: the stage workdir (:func:`find_workdir`).
        stage: ``--stage`` of the run.
        dataset: dataset config name.
        data_dir: preprocessed data directory the run trained on.
        no_of_tr_imgs: labeled set key (``tr1`` ...).
        comb_tr_imgs: combination key (``c1`` ...).
        seed: ``--seed``.
        init_from: ``--init_from`` (the previous stage's workdir).
    """

    workdir: Path | None = None
    stage: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    no_of_tr_imgs: str | None = None
    comb_tr_imgs: str | None = None
    seed: int | None = None
    init_from: str | None = None


def run_info(path: str | os.PathLike) -> RunInfo:
    """:class:`RunInfo` of the workdir that ``path`` (a workdir, or a model file or folder inside
    one) belongs to; all fields None when there is none.

    Raises:
        InputError: the workdir's config.json is invalid or has values of the wrong type.
    """
    workdir = find_workdir(path)
    if workdir is None:
        return RunInfo()
    config = read_config(workdir)
    cpath = config_path(workdir)
    strings = {k: _typed(config, k, str, cpath)
               for k in ("stage", "dataset", "data_dir", "no_of_tr_imgs", "comb_tr_imgs", "init_from")}
    return RunInfo(workdir=workdir, seed=_typed(config, "seed", int, cpath), **strings)


# ------------------------------------------------------------------------- best/best.json


def write_best_record(workdir: str | os.PathLike, step: int, val_dice: float, extra: dict | None = None) -> None:
    """Write ``W/best/best.json`` = ``{"step", "val_dice", **extra}`` (use :func:`workdir.save_best`,
    which writes the weights first)."""
    atomic_write_json(Path(workdir) / BEST_DIR / BEST_JSON,
                      {"step": int(step), "val_dice": float(val_dice), **(extra or {})})


def read_best(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """Contents of ``W/best/best.json`` (``step`` int, ``val_dice`` float, extra keys), None if absent.

    Raises:
        InputError: invalid JSON or missing / mistyped ``step`` or ``val_dice``.
    """
    path = Path(workdir) / BEST_DIR / BEST_JSON
    if not path.exists():
        return None
    best = _read_object(path)
    for key, kind in (("step", int), ("val_dice", float)):
        if best.get(key) is None:
            raise InputError(f"{path}: no '{key}'")
        best[key] = _typed(best, key, kind, path)
    return best


# --------------------------------------------------------------------------- summary.json


def write_summary(workdir: str | os.PathLike, summary: dict[str, Any]) -> None:
    """``W/summary.json``: what the stage did (final step, skips, best validation Dice, timings);
    non-finite numbers are written as null."""
    atomic_write_json(Path(workdir) / SUMMARY, json_safe(summary))


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """``W/summary.json`` of a stage (None while the stage has not finished).

    Raises:
        InputError: invalid JSON or not an object.
    """
    path = Path(workdir) / SUMMARY
    return _read_object(path) if path.exists() else None


def read_eval_summary(path: str | os.PathLike) -> dict[str, Any]:
    """An ``evaluate.py`` summary: ``path`` is its ``summary.json`` or the folder holding it
    (``W/eval_test``).

    Raises:
        InputError: missing or invalid file, or a file without ``overall`` / ``structures`` (a
            stage's own ``W/summary.json`` is not an evaluation summary).
    """
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    summary = _read_object(path)
    if not isinstance(summary.get("overall"), dict) or not isinstance(summary.get("structures"), dict):
        raise InputError(f"{path} is not an evaluate.py summary (no 'overall'/'structures'; "
                         f"a stage's own W/summary.json is not one)")
    return summary


# --------------------------------------------------------------------------- metrics.json


def metrics_path(workdir: str | os.PathLike) -> Path:
    """``W/metrics.json``."""
    return Path(workdir) / METRICS


class MetricsLog:
    """``W/metrics.json`` history (``{"train": [{"step", name: value}], "val": [...], ...}``),
    truncated to the restored step on resume; an unreadable old file starts a new history."""

    def __init__(self, workdir: str | os.PathLike, upto_step: int) -> None:
        self.path = metrics_path(workdir)
        self.data: dict[str, Any] = {"train": [], "val": []}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
                for key in ("train", "val"):
                    self.data[key] = [e for e in old.get(key, []) if int(e["step"]) <= upto_step]
                for key, value in old.items():
                    if key not in ("train", "val"):
                        self.data[key] = value
            except (ValueError, KeyError, TypeError, AttributeError):
                self.data = {"train": [], "val": []}

    def add(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Append ``{"step": step, **values}`` to the ``kind`` series (non-finite values -> null)."""
        self.data.setdefault(kind, []).append({"step": int(step), **{k: json_safe(v) for k, v in values.items()}})

    def set(self, key: str, value: Any) -> None:
        """Store a top-level entry besides the series."""
        self.data[key] = value

    def write(self) -> None:
        """Write the file atomically."""
        atomic_write_json(self.path, self.data)


def read_metrics(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The ``train`` and ``val`` series of a workdir's ``metrics.json`` (``path`` = the workdir or
    the file).

    Raises:
        InputError: missing or invalid file, or not an object.
    """
    path = Path(path)
    data = _read_object(metrics_path(path) if path.is_dir() else path)
    return {k: list(data.get(k) or []) for k in ("train", "val")}
