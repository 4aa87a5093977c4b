"""Dataset configurations and split lists.

``get_config(dataset)`` returns the :class:`DatasetConfig`; ``get_split(dataset, no_of_tr_imgs,
comb_tr_imgs)`` returns the :class:`Split` (labeled, unlabeled, val, test volume ids).
"""
from __future__ import annotations

from types import ModuleType

from configs import acdc, mmwhs, prostate_md, synthetic
from configs.base import DatasetConfig, Split, SplitTable, resolve_split
from common.errors import InputError

DATASETS = ("acdc", "prostate_md", "mmwhs", "synthetic")
_MODULES: dict[str, ModuleType] = {
    "acdc": acdc,
    "prostate_md": prostate_md,
    "mmwhs": mmwhs,
    "synthetic": synthetic,
}

__all__ = ["DATASETS", "DatasetConfig", "Split", "SplitTable", "get_config", "get_split"]


def _module(dataset: str) -> ModuleType:
    if dataset not in _MODULES:
        raise InputError(f"--dataset={dataset}: unknown dataset; valid: {', '.join(DATASETS)}")
    return _MODULES[dataset]


def get_config(dataset: str) -> DatasetConfig:
    """Configuration of ``dataset`` (one of :data:`DATASETS`); unknown names raise ``InputError``."""
    return _module(dataset).CONFIG


def get_split(dataset: str, no_of_tr_imgs: str, comb_tr_imgs: str) -> Split:
    """Labeled, unlabeled, validation and test ids for an experiment (ORIGINAL_SPEC §5.3).

    Args:
        dataset: one of :data:`DATASETS`.
        no_of_tr_imgs: ``tr1``, ``tr2``, ``tr8``, ``tr10``, ``tr22``, ``tr52``, ``trall``,
            ``ssl4mis3``, ``ssl4mis7`` (availability depends on the dataset).
        comb_tr_imgs: ``c1``..``c5``.

    Returns:
        The :class:`Split`; ``unlabeled`` is the dataset's unlabeled pool (``cfg.unlabeled_pool``)
        unless the split defines its own.

    Raises:
        InputError: unknown dataset or combination (the message lists the valid ones).
    """
    mod = _module(dataset)
    return resolve_split(dataset, mod.CONFIG, mod.SPLITS, no_of_tr_imgs, comb_tr_imgs)
