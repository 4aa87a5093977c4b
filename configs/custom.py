"""Custom datasets (``--dataset custom``): config and split lists stored in the data directory.

``python -m data.preprocess --dataset custom`` derives the dataset config from an MSD / nnU-Net
folder and writes it, with the split lists, into ``<data_dir>/dataset.json``::

    {"dataset": "custom",
     "config": {"name": "custom", "num_classes": 3, "struct_names": [...], "image_size": [H, W],
                "target_resolution": [x, y], "class_weights": [...], "min_seg_classes": 2,
                "min_contrastive_classes": 3, "crf_params": [...], "unlabeled_pool": ["unlabeled", "c1"],
                ...every DatasetConfig field...},
     "splits": {"tr1": {"c1": [ids], "c2": [...]}, "tr2": {...}, "trall": {"c1": [...]},
                "unlabeled": [ids], "val": [ids], "test": [ids]},
     ...}

``splits`` has the format of a ``--split_file``: labeled sets by name (``{comb: ids}``, or a bare
list meaning ``c1``) and the reserved keys ``unlabeled``, ``val`` and ``test``. This module is the
one place that turns such a file, or a config dict recorded by training / export
(``config.json`` ``dataset_config``, SavedModel metadata), into a :class:`DatasetConfig` and a
:class:`SplitTable`. The unlabeled pool is the labeled set ``unlabeled``/``c1`` of the table
(what pre-training reads), and every labeled set shares the one validation and test list.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from configs.base import DatasetConfig, SplitTable
from common.errors import InputError
from common.jsonfile import read_dataset_json

NAME = "custom"
POOL_KEY = ("unlabeled", "c1")
RESERVED = ("unlabeled", "val", "test")
_TUPLE_FIELDS = {"image_size": int, "target_resolution": float, "struct_names": str, "class_weights": float,
                 "unlabeled_pool": str}


def config_to_dict(cfg: DatasetConfig) -> dict[str, Any]:
    """JSON-friendly dict of every field of ``cfg`` (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(values: Mapping[str, Any], source: str) -> DatasetConfig:
    """Rebuild a :class:`DatasetConfig` from :func:`config_to_dict` output.

    Args:
        values: the dict (unknown keys are an error: a newer file than this code).
        source: file named in error messages.

    Raises:
        InputError: not a dict, missing or unknown fields, wrong types or inconsistent values.
    """
    if not isinstance(values, Mapping):
        raise InputError(f"{source}: dataset config must be a JSON object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(DatasetConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{source}: unknown dataset config field(s) {', '.join(unknown)}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in values]
    if missing:
        raise InputError(f"{source}: dataset config lacks {', '.join(missing)}")
    kw: dict[str, Any] = {}
    try:
        for name, value in values.items():
            if name in _TUPLE_FIELDS:
                kw[name] = tuple(_TUPLE_FIELDS[name](v) for v in value)
            elif name == "crf_params":
                kw[name] = tuple(float(v) for v in value[:5]) + tuple(int(v) for v in value[5:])
            elif name == "input_channel":
                kw[name] = None if value is None else int(value)
            elif name == "crf_pixel_mm":
                kw[name] = None if value is None else tuple(float(v) for v in value)
            elif name in ("name", "raw_layout"):
                kw[name] = str(value)
            elif name == "contrastive_background":
                if not isinstance(value, bool):
                    raise ValueError(f"contrastive_background must be true or false, got {value!r}")
                kw[name] = value
            else:
                kw[name] = int(value)
        return DatasetConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: invalid dataset config ({exc})") from None


def _id_list(value: Any, where: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{source}: {where} must be a list of volume ids (strings)")
    dup = sorted({v for v in value if value.count(v) > 1})
    if dup:
        raise InputError(f"{source}: {where} lists {', '.join(dup)} more than once")
    return tuple(value)


def normalize_splits(raw: Any, source: str) -> dict[str, Any]:
    """Check the structure of a split dict and return it normalized.

    Labeled sets become ``{name: {comb: [ids]}}`` (a bare list is combination ``c1``); ``unlabeled``,
    ``val`` and ``test`` are id lists. ``val`` must be non-empty (model selection needs it), ``test``
    may be empty or absent, ``unlabeled`` must be present (the caller fills a default).

    Raises:
        InputError: naming ``source`` and the offending entry.
    """
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: splits must be a JSON object like "
                         '{"tr1": {"c1": [ids]}, "unlabeled": [ids], "val": [ids], "test": [ids]}')
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in RESERVED:
            continue
        combs = {"c1": value} if isinstance(value, list) else value
        if not isinstance(combs, Mapping) or not combs:
            raise InputError(f"{source}: labeled set {name!r} must map combinations to id lists, "
                             f'e.g. {{"c1": ["case_001"]}}')
        out[str(name)] = {str(c): list(_id_list(ids, f"{name}/{c}", source)) for c, ids in combs.items()}
        if any(not ids for ids in out[str(name)].values()):
            raise InputError(f"{source}: labeled set {name!r} has an empty combination")
    if not out:
        raise InputError(f"{source}: no labeled set (e.g. \"tr1\": {{\"c1\": [ids]}}) in the splits")
    if "unlabeled" not in raw:
        raise InputError(f"{source}: splits lack the 'unlabeled' list")
    out["unlabeled"] = list(_id_list(raw["unlabeled"], "unlabeled", source))
    out["val"] = list(_id_list(raw.get("val"), "val", source)) if "val" in raw else []
    if not out["val"]:
        raise InputError(f"{source}: 'val' must list at least one labeled volume (model selection)")
    out["test"] = list(_id_list(raw.get("test", []), "test", source))
    return out


def check_split_ids(splits: Mapping[str, Any], ids: Sequence[str], labeled_ids: Sequence[str],
                    source: str) -> None:
    """Check a normalized split against the volumes of a dataset.

    Every id must exist; labeled sets, ``val`` and ``test`` need labeled volumes; labeled sets,
    ``val`` and ``test`` must not overlap (no test or validation leakage), and the unlabeled pool
    must not hold test volumes.

    Raises:
        InputError: naming ``source``, the list and the id.
    """
    known, labeled = set(ids), set(labeled_ids)
    lists = [(f"{n}/{c}", v) for n, combs in splits.items() if n not in RESERVED for c, v in combs.items()]
    lists += [(k, splits[k]) for k in RESERVED]
    for where, values in lists:
        unknown = [v for v in values if v not in known]
        if unknown:
            raise InputError(f"{source}: {where} lists unknown volume id(s) {', '.join(unknown[:5])} "
                             f"(the dataset has {len(known)}: {', '.join(sorted(known)[:5])}...)")
        if where != "unlabeled":
            unlab = [v for v in values if v not in labeled]
            if unlab:
                raise InputError(f"{source}: {where} lists volume(s) without a label: {', '.join(unlab[:5])}")
    val, test = set(splits["val"]), set(splits["test"])
    if val & test:
        raise InputError(f"{source}: volume(s) {', '.join(sorted(val & test)[:5])} are in both val and test")
    leak = sorted(set(splits["unlabeled"]) & test)
    if leak:
        raise InputError(f"{source}: test volume(s) {', '.join(leak[:5])} are in the unlabeled pool")
    for where, values in lists[:-3]:
        for other, held in (("val", val), ("test", test)):
            both = sorted(set(values) & held)
            if both:
                raise InputError(f"{source}: volume(s) {', '.join(both[:5])} are in both {where} and {other}")


def split_table(splits: Mapping[str, Any]) -> SplitTable:
    """The :class:`SplitTable` of a normalized split (pool = labeled set ``unlabeled``/``c1``)."""
    train = {(n, c): tuple(v) for n, combs in splits.items() if n not in RESERVED for c, v in combs.items()}
    train[POOL_KEY] = tuple(splits["unlabeled"])
    val = tuple(splits["val"])
    return SplitTable(train=train, val={k: val for k in train}, test=tuple(splits["test"]))


def _dataset_json(data_dir: str | os.PathLike | None) -> tuple[dict[str, Any], str]:
    if not data_dir:
        raise InputError("--dataset custom needs --data_dir (a directory written by "
                         "python -m data.preprocess --dataset custom)")
    info = read_dataset_json(data_dir)
    source = str(Path(data_dir) / "dataset.json")
    if info.get("dataset") != NAME or "config" not in info or "splits" not in info:
        raise InputError(f"{source}: not written by python -m data.preprocess --dataset custom "
                         f"(dataset {info.get('dataset')!r}); use --dataset {info.get('dataset') or '?'}")
    return info, source


def load_config(data_dir: str | os.PathLike | None) -> DatasetConfig:
    """The dataset config stored in ``<data_dir>/dataset.json``."""
    info, source = _dataset_json(data_dir)
    return config_from_dict(info["config"], source)


def load_split_table(data_dir: str | os.PathLike | None) -> SplitTable:
    """The split lists stored in ``<data_dir>/dataset.json``."""
    info, source = _dataset_json(data_dir)
    return split_table(normalize_splits(info["splits"], source))
