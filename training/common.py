"""Pieces every stage needs: the resolved configuration, the workdir, data loading, validation,
TensorBoard writers, distributed datasets.

A stage configuration is a plain dict (``StageConfig``: attribute access, JSON-serializable) built
by the scripts from their flags; library code never reads absl FLAGS.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

import configs
from data import store
from data.errors import InputError
from training import loop as loop_lib
from training import strategy as strat


class StageConfig(dict):
    """Resolved flags of a stage; ``conf.x`` is ``conf["x"]``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def replace(self, **kw: Any) -> "StageConfig":
        out = StageConfig(self)
        out.update(kw)
        return out


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
    jit: bool
    replicas: int

    def writers(self) -> tuple[Any, Any]:
        """TensorBoard writers for ``train/`` and ``eval/`` (None on non-chief workers)."""
        if not self.is_chief:
            return (None, None)
        return (tf.summary.create_file_writer(str(self.out_dir / "train")),
                tf.summary.create_file_writer(str(self.out_dir / "eval")))


def check_data_dir(data_dir: str, dataset: str, cfg: Any) -> None:
    """``--data_dir`` must be a preprocessed directory of ``dataset`` with the config's image size."""
    if not data_dir:
        raise InputError("--data_dir is required (a directory written by python -m data.preprocess)")
    meta = store.read_dataset_json(data_dir)
    if meta.get("dataset") not in (None, dataset):
        raise InputError(f"--data_dir={data_dir}: preprocessed for dataset {meta.get('dataset')!r}, "
                         f"not {dataset!r}")
    size = meta.get("image_size")
    if size is not None and tuple(int(s) for s in size) != tuple(cfg.image_size):
        raise InputError(f"--data_dir={data_dir}: image size {tuple(size)} differs from the "
                         f"{dataset} config {tuple(cfg.image_size)}")


def resolve_dataset(conf: StageConfig) -> StageConfig:
    """Add the dataset's fixed properties (classes, sizes, names) to the configuration."""
    cfg = configs.get_config(conf.dataset)
    return conf.replace(num_classes=int(cfg.num_classes), image_size=list(cfg.image_size),
                        struct_names=list(cfg.struct_names))


def prepare(conf: StageConfig, shape_keys: Sequence[str], split_key: tuple[str, str] | None = None) -> StageEnv:
    """Create the strategy, check inputs, write/check ``config.json``; return the stage environment.

    Args:
        conf: resolved configuration (``resolve_dataset`` already applied).
        shape_keys: stage-specific keys added to ``COMMON_SHAPE_KEYS``.
        split_key: ``(no_of_tr_imgs, comb_tr_imgs)``; default from ``conf``.
    """
    if not conf.get("workdir"):
        raise InputError("--workdir is required")
    cfg = configs.get_config(conf.dataset)
    check_data_dir(conf.data_dir, conf.dataset, cfg)
    key = split_key or (conf.no_of_tr_imgs, conf.comb_tr_imgs)
    split = configs.get_split(conf.dataset, *key)
    strategy = strat.make_strategy(int(conf.get("num_replicas", 1)))
    chief = strat.is_chief(strategy)
    workdir = Path(conf.workdir)
    out_dir = strat.output_dir(workdir, strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chief:  # a run killed mid-write left temporaries beside its (intact) files
        from training.checkpoint import remove_stale_temps

        remove_stale_temps(out_dir)
    loop_lib.write_or_check_config(out_dir, dict(conf), tuple(COMMON_SHAPE_KEYS) + tuple(shape_keys),
                                   is_chief=True)
    return StageEnv(conf=conf, cfg=cfg, split=split, strategy=strategy, workdir=workdir,
                    out_dir=out_dir, is_chief=chief, jit=strat.resolve_jit(conf.get("jit_compile", "auto")),
                    replicas=int(strategy.num_replicas_in_sync))


def end_step(total: int, max_steps: int | None) -> int:
    """``min(total, max_steps)`` when ``max_steps`` > 0 (smoke runs), else ``total``."""
    if max_steps is not None and int(max_steps) > 0:
        return min(int(total), int(max_steps))
    return int(total)


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


class Validator:
    """Validation Dice at native resolution (ORIGINAL_SPEC §6.1), the model-selection score.

    The score is ``evaluation.inference.evaluate_volumes`` (the same code as ``evaluate.py``);
    this class adds the per-structure means and a few overlays for TensorBoard. Returns
    ``{"val_dice": mean over volumes of the mean foreground Dice, "val_dice_<struct>": ...,
    "images": (3, H, 3W, 3) uint8 overlays of the first validation volume}``.
    """

    def __init__(self, data_dir: str, ids: Sequence[str], cfg: Any, model: Any) -> None:
        from evaluation.inference import keras_predictor

        self.cfg = cfg
        self.data_dir = data_dir
        self.ids = tuple(ids)
        vols = load_labeled(data_dir, ids, "validation")  # fail early on unlabeled volumes
        self.first = vols[0]
        fg = (self.first.label > 0).sum(axis=(1, 2))  # (D,)
        self.pick = np.sort(np.argsort(-fg)[:3])  # the 3 slices with the most foreground
        self.predictor = keras_predictor(model)

    def __call__(self, step: int) -> dict[str, Any]:
        from evaluation.inference import evaluate_volumes

        res = evaluate_volumes(self.predictor, self.data_dir, self.ids, self.cfg)
        out: dict[str, Any] = {"val_dice": res.mean_dice}
        with np.errstate(all="ignore"):
            per_struct = np.nanmean(res.dice[:, 1:], axis=0)  # (C-1,)
        for name, value in zip(self.cfg.struct_names, per_struct):
            out[f"val_dice_{name}"] = float(value)
        vol = self.first
        probs = self.predictor(vol.image[self.pick][..., None])  # (3, H, W, C), inference BN
        out["images"] = loop_lib.overlay_images(vol.image[self.pick], vol.label[self.pick],
                                                np.argmax(probs, -1), self.cfg.num_classes)
        return out


def read_workdir_config(path: str | os.PathLike) -> dict:
    """``config.json`` of a stage workdir (``InputError`` if missing)."""
    p = Path(path) / "config.json"
    if not p.is_file():
        raise InputError(f"--init_from={path}: no config.json (not a stage workdir)")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise InputError(f"{p}: invalid JSON ({exc})") from None


def write_summary(env: StageEnv, summary: dict) -> None:
    """``W/summary.json``: what the stage did (final step, skips, best validation Dice, timings)."""
    if env.is_chief:
        from data.atomic import atomic_write_json

        atomic_write_json(env.out_dir / "summary.json", loop_lib._num(summary))
