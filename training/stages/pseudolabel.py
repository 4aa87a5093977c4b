"""Pseudo-label stage (ORIGINAL_SPEC §4.3 step 2) and the helper the joint stage reuses between rounds.

``W/pseudo_labels/round_0/<id>.nii.gz`` (int16, geometry of ``<data_dir>/<id>/image.nii.gz``) and
``manifest.json`` (kept / rejected volumes, TTA agreement, timings), written by
``pseudolabels.generate.generate_pseudo_labels``. The manifest is written last, so a directory
with a manifest is complete; rerunning the stage with the same CRF / TTA / seed settings then
does nothing; other settings are refused (``config.json`` records the old ones) unless
``--override_config``, and then the labels are regenerated.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import InputError
from training.config import SelfTrainConfig
from training.engine import loop as loop_lib
from training.engine.env import prepare, write_summary
from pseudolabels.generate import MANIFEST, generate_pseudo_labels, load_pseudo_labels, read_manifest
import workdir as wdir

SHAPE_KEYS: tuple[str, ...] = ()


def round_dir(workdir: str | Path, r: int) -> Path:
    """``W/pseudo_labels/round_<r>``."""
    return Path(workdir) / "pseudo_labels" / f"round_{int(r)}"


def make_pseudo_labels(unet: Any, conf: SelfTrainConfig, cfg: Any, volumes: Sequence[Any],
                       out_dir: str | Path) -> dict:
    """Predict, (TTA-filter,) CRF-refine and write the pseudo-labels of ``volumes``; reuse a
    complete directory (one with a manifest) made with the same settings (CRF, TTA filter,
    threshold, seed), regenerate it otherwise."""
    from evaluation.inference import keras_predictor, predict_volume

    out_dir = Path(out_dir)
    settings = {"crf": bool(conf.crf), "tta_filter": bool(conf.test_aug_overlap),
                "f1_threshold": float(conf.test_f1_threshold), "seed": int(conf.seed)}
    if (out_dir / MANIFEST).exists():
        old = read_manifest(out_dir)
        if all(old.get(k) == v for k, v in settings.items()):
            return old
        loop_lib.log(f"[pseudolabel] {out_dir} was made with other settings "
                     f"({ {k: old.get(k) for k in settings} }): regenerating")
    predictor = keras_predictor(unet)

    def predict_fn(x: np.ndarray) -> np.ndarray:
        return predict_volume(predictor, x[..., 0])  # (D, H, W, C), chunks of 20 slices

    workers = conf.crf_workers or None
    return generate_pseudo_labels(predict_fn, volumes, cfg, out_dir, workers=workers, progress=True,
                                  data_dir=conf.data_dir, **settings)


def load_kept(pl_dir: str | Path, volumes: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Images and pseudo-labels of the volumes the manifest kept."""
    manifest = read_manifest(pl_dir)
    kept = list(manifest.get("kept", []))
    if not kept:
        raise InputError(f"{pl_dir}: every unlabeled volume was rejected by the TTA filter; lower "
                         f"--test_f1_threshold or use --test_aug_overlap 0")
    labels = load_pseudo_labels(pl_dir, kept)
    by_id = {v.id: v for v in volumes}
    missing = [k for k in kept if k not in by_id]
    if missing:
        raise InputError(f"{pl_dir}: pseudo-labels for volumes {missing} that are not in the unlabeled pool")
    images = [by_id[k].image for k in kept]
    labs = [labels[k] for k in kept]
    for k, img, lab in zip(kept, images, labs):
        if img.shape != lab.shape:
            raise InputError(f"{pl_dir}/{k}.nii.gz: shape {lab.shape} differs from the image {img.shape}")
    return images, labs, manifest


def run_pseudolabel(conf: SelfTrainConfig) -> dict[str, Any]:
    """``--stage pseudolabel``: pseudo-labels of the unlabeled pool from the ``--init_from`` model."""
    t0 = time.time()
    if not conf.init_from:
        raise InputError("--init_from is required for --stage pseudolabel (a baseline workdir)")
    env = prepare(conf, SHAPE_KEYS, (conf.no_of_tr_imgs, conf.comb_tr_imgs))
    unet = wdir.load_unet(conf.init_from, num_classes=env.cfg.num_classes, precision=conf.precision)
    from data import store

    volumes = store.load_volumes(conf.data_dir, env.split.unlabeled)
    out = round_dir(env.out_dir, 0)
    manifest = make_pseudo_labels(unet, conf, env.cfg, volumes, out)
    loop_lib.log(f"[pseudolabel] {len(manifest['kept'])} volumes kept, {len(manifest['rejected'])} "
                 f"rejected -> {out}")
    summary = {"stage": "pseudolabel", "kept": len(manifest["kept"]), "rejected": len(manifest["rejected"]),
               "dir": str(out), "slices_per_s": manifest.get("timings", {}).get("slices_per_s"),
               "seconds": time.time() - t0}
    write_summary(env, summary)
    return summary
