"""The environment of a stage run: strategy, workdir and config.json, dataset config and split,
distributed datasets, labeled-volume loading.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import tensorflow as tf

import configs
from common.errors import InputError, warn
from data import store
from training.config import StageConfig
from training.engine import strategy as strat
import workdir as wdir


# Keys whose change makes the checkpoints of a workdir unusable (checked against config.json).
COMMON_SHAPE_KEYS = ("stage", "dataset", "num_classes", "image_size")


@dataclasses.dataclass
class StageEnv:
    """Everything a stage needs besides its own models."""

    conf: StageConfig
    cfg: Any  # configs.DatasetConfig
    split: Any  # configs.Split
    strategy: tf.distribute.Strategy
    workdir: Path
    out_dir: Path  # = workdir on the chief, a temp dir on other workers
    is_chief: bool
    xla: strat.XlaPlan
    replicas: int

    def writers(self) -> tuple[Any, Any]:
        """TensorBoard writers for ``train/`` and ``eval/`` (None on non-chief workers)."""
        if not self.is_chief:
            return (None, None)
        return (tf.summary.create_file_writer(str(self.out_dir / "train")),
                tf.summary.create_file_writer(str(self.out_dir / "eval")))


def check_data_dir(data_dir: str, dataset: str, cfg: Any) -> None:
    """``--data_dir`` must be a preprocessed directory of ``dataset`` with the config's image size.

    (``custom``: ``configs.get_config`` has already read the config from this directory.)
    """
    meta = store.read_dataset_json(data_dir)
    if meta.get("dataset") not in (None, dataset):
        raise InputError(f"--data_dir={data_dir}: preprocessed for dataset {meta.get('dataset')!r}, "
                         f"not {dataset!r}; pass --dataset {meta.get('dataset')}")
    size = meta.get("image_size")
    if size is not None and tuple(int(s) for s in size) != tuple(cfg.image_size):
        raise InputError(f"--data_dir={data_dir}: image size {tuple(size)} differs from the "
                         f"{dataset} config {tuple(cfg.image_size)}")


def dataset_fields(cfg: Any) -> dict[str, Any]:
    """The dataset's fixed properties recorded in ``config.json`` beside the flags."""
    return {"num_classes": int(cfg.num_classes), "image_size": list(cfg.image_size),
            "struct_names": list(cfg.struct_names), "dataset_config": configs.custom.config_to_dict(cfg)}


def prepare(conf: StageConfig, shape_keys: Sequence[str], split_key: tuple[str, str],
            extra: dict[str, Any] | None = None) -> StageEnv:
    """Create the strategy, check inputs, write/check ``config.json``; return the stage environment.

    Args:
        conf: the stage's typed config.
        shape_keys: stage-specific keys added to ``COMMON_SHAPE_KEYS``.
        split_key: ``(no_of_tr_imgs, comb_tr_imgs)`` of the volumes the stage reads.
        extra: further values recorded in ``config.json`` (e.g. the pre-training pool).
    """
    if not conf.workdir:
        raise InputError("--workdir is required")
    if not conf.data_dir:
        raise InputError("--data_dir is required (a directory written by python -m data.preprocess)")
    cfg = configs.get_config(conf.dataset, conf.data_dir)
    check_data_dir(conf.data_dir, conf.dataset, cfg)
    split = configs.get_split(conf.dataset, *split_key, data_dir=conf.data_dir)
    strategy = strat.make_strategy(int(conf.num_replicas))
    chief = strat.is_chief(strategy)
    workdir = Path(conf.workdir)
    out_dir = strat.output_dir(workdir, strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chief:  # a run killed mid-write left temporaries beside its (intact) files
        from training.engine.checkpoint import remove_stale_temps

        remove_stale_temps(out_dir)
    record = {**conf.to_json(), **dataset_fields(cfg), **(extra or {})}
    keys, override = tuple(COMMON_SHAPE_KEYS) + tuple(shape_keys), bool(conf.override_config)
    if not chief and wdir.has_config(workdir):  # the chief's record (shared file system): refuse with it
        wdir.write_or_check_config(workdir, record, keys, is_chief=False, override=override)
    overridden = wdir.write_or_check_config(out_dir, record, keys, is_chief=True, override=override)
    if overridden and chief:
        warn(f"[{conf.stage}] --override_config: {workdir} continues under changed settings ("
             + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in overridden.items())
             + f"); recorded in {wdir.config_path(workdir)} ({wdir.HISTORY_KEY})")
    return StageEnv(conf=conf, cfg=cfg, split=split, strategy=strategy, workdir=workdir,
                    out_dir=out_dir, is_chief=chief,
                    xla=strat.xla_plan(conf.jit_compile, int(strategy.num_replicas_in_sync)),
                    replicas=int(strategy.num_replicas_in_sync))


def load_labeled(data_dir: str, ids: Sequence[str], what: str) -> list[store.Volume]:
    """Load volumes that must carry labels."""
    vols = store.load_volumes(data_dir, list(ids))
    missing = [v.id for v in vols if v.label is None]
    if missing:
        raise InputError(f"--data_dir={data_dir}: {what} volume(s) {', '.join(missing)} have no label.nii.gz")
    return vols


def data_seed(seed: int, start_step: int, worker: int = 0) -> int:
    """Seed of a data pipeline that starts at ``start_step`` (a resumed run draws fresh batches)."""
    return int(seed) * 1_000_003 + int(start_step) * 7_919 + int(worker) * 104_729


def distribute(strategy: tf.distribute.Strategy, dataset_fn: Callable[[tf.distribute.InputContext],
                                                                      tf.data.Dataset]):
    """Iterator over per-replica batches: every replica gets its own complete original batch.

    ``dataset_fn(ctx)`` builds one pipeline per worker with a worker-dependent seed; its elements are
    whole batches, dealt to the replicas of the worker in turn.
    """
    if strategy.num_replicas_in_sync == 1 and not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return iter(dataset_fn(tf.distribute.InputContext()))
    return iter(strategy.distribute_datasets_from_function(dataset_fn))


def write_summary(env: StageEnv, summary: dict) -> None:
    """``W/summary.json``: what the stage did (final step, skips, best validation Dice, timings)."""
    if env.is_chief:
        wdir.write_summary(env.out_dir, summary)
