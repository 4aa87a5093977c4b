"""Dataset configurations and split lists.

``get_config(dataset, data_dir)`` returns the :class:`DatasetConfig`; ``get_split(dataset,
no_of_tr_imgs, comb_tr_imgs, data_dir)`` returns the :class:`Split` (labeled, unlabeled, val, test
volume ids). The built-in datasets are Python modules; ``custom`` reads both from the
``dataset.json`` that ``python -m data.preprocess --dataset custom`` wrote into ``data_dir``
(:mod:`configs.custom`), or from a config recorded with a trained model.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Mapping

from configs import acdc, custom, mmwhs, prostate_md, synthetic
from configs.base import DatasetConfig, Split, SplitTable, resolve_split
from common.errors import InputError

BUILTIN = ("acdc", "prostate_md", "mmwhs", "synthetic")
DATASETS = BUILTIN + (custom.NAME,)
_MODULES: dict[str, ModuleType] = {
    "acdc": acdc,
    "prostate_md": prostate_md,
    "mmwhs": mmwhs,
    "synthetic": synthetic,
}

__all__ = ["BUILTIN", "DATASETS", "DatasetConfig", "Split", "SplitTable", "get_config", "get_split",
           "get_split_table"]

DataDir = str | os.PathLike | None


def _module(dataset: str) -> ModuleType:
    if dataset not in _MODULES:
        raise InputError(f"--dataset={dataset}: unknown dataset; valid: {', '.join(DATASETS)}")
    return _MODULES[dataset]


def get_config(dataset: str, data_dir: DataDir = None, recorded: Mapping[str, Any] | None = None) -> DatasetConfig:
    """Configuration of ``dataset`` (one of :data:`DATASETS`); unknown names raise ``InputError``.

    Args:
        dataset: dataset name.
        data_dir: preprocessed data directory; ``custom`` reads its ``dataset.json``.
        recorded: for ``custom``, a config dict recorded with a trained model (workdir
            ``config.json`` ``dataset_config`` or SavedModel metadata); used instead of ``data_dir``.
            Ignored for the built-in datasets.
    """
    if dataset == custom.NAME:
        if recorded is not None:
            return custom.config_from_dict(recorded, "recorded dataset_config")
        return custom.load_config(data_dir)
    return _module(dataset).CONFIG


def get_split_table(dataset: str, data_dir: DataDir = None) -> SplitTable:
    """All split lists of ``dataset`` as a :class:`SplitTable` (``custom``: from ``data_dir``)."""
    if dataset == custom.NAME:
        return custom.load_split_table(data_dir)
    return _module(dataset).SPLITS


def get_split(dataset: str, no_of_tr_imgs: str, comb_tr_imgs: str, data_dir: DataDir = None) -> Split:
    """Labeled, unlabeled, validation and test ids for an experiment (ORIGINAL_SPEC §5.3).

    Args:
        dataset: one of :data:`DATASETS`.
        no_of_tr_imgs: ``tr1``, ``tr2``, ``tr8``, ``tr10``, ``tr22``, ``tr52``, ``trall``,
            ``ssl4mis3``, ``ssl4mis7`` (availability depends on the dataset; ``custom``: the sets
            of its ``dataset.json``).
        comb_tr_imgs: ``c1``..``c5``.
        data_dir: preprocessed data directory (needed for ``custom``).

    Returns:
        The :class:`Split`; ``unlabeled`` is the dataset's unlabeled pool (``cfg.unlabeled_pool``)
        unless the split defines its own.

    Raises:
        InputError: unknown dataset or combination (the message lists the valid ones).
    """
    cfg = get_config(dataset, data_dir)
    return resolve_split(dataset, cfg, get_split_table(dataset, data_dir), no_of_tr_imgs, comb_tr_imgs)
