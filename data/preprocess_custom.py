"""Preprocessing of an MSD / nnU-Net folder (``python -m data.preprocess --dataset custom``).

Reads the folder (:mod:`data.msd_folder`), derives the dataset config and splits
(:mod:`data.custom_config`), preprocesses every labeled and unlabeled volume exactly as the
built-in datasets (``data.volume_prep.preprocess_volume``) and writes ``P/dataset.json`` with the
complete config and splits (:mod:`configs.custom` reads them back). The output directory is
written atomically: an error leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from configs import custom
from data import custom_config as cc
from common.errors import InputError
from data.msd_folder import image_geometry, read_folder
from data.volume_prep import check_inputs, dataset_summary, process_source, select_ids


def _resolution_and_size(sources: Sequence[Any], target_resolution: Sequence[float] | None,
                         image_size: Sequence[int] | None) -> tuple[tuple[float, float], tuple[int, int], dict]:
    """Target resolution and image size (flags, else derived from the headers) and how they were found."""
    geo = [image_geometry(s.image_path) for s in sources]
    shapes, spacings = [g[0] for g in geo], [g[1] for g in geo]
    derived = {}
    if target_resolution is None:
        target = cc.median_resolution(spacings)
        derived["target_resolution"] = f"median in-plane spacing of {len(sources)} volumes"
    else:
        target = (float(target_resolution[0]), float(target_resolution[1]))
        derived["target_resolution"] = "--target_resolution"
    if image_size is None:
        size = cc.derive_image_size(shapes, spacings, target)
        derived["image_size"] = (f"largest resampled in-plane extent, rounded up to a multiple of {cc.MULTIPLE}, "
                                 f"capped at {cc.MAX_IMAGE_SIZE}")
    else:
        size = (int(image_size[0]), int(image_size[1]))
        if any(v % cc.MULTIPLE for v in size):
            raise InputError(f"--image_size={size[0]},{size[1]}: must be multiples of {cc.MULTIPLE} "
                             "(the UNet downsamples 5 times)")
        derived["image_size"] = "--image_size"
    return target, size, derived


def _min_classes(counts: np.ndarray, num_classes: int, min_seg: int | None, min_con: int | None,
                 notes: list[str]) -> tuple[int, int, dict]:
    """``min_seg_classes`` and ``min_contrastive_classes`` (flags, else the rules of data.custom_config)."""
    how: dict[str, str] = {}
    chosen: dict[str, int] = {}
    # (name, flag value, start, floor, fraction of slices needed, rule)
    rules = (("min_seg_classes", min_seg, cc.default_min_seg_classes(num_classes), 1, cc.SEG_FRACTION,
              "built-in rule (2 for C <= 3, else 3)"),
             ("min_contrastive_classes", min_con, num_classes, 2, cc.CONTRASTIVE_FRACTION,
              "all classes (the originals' rule)"))
    for name, flag, start, floor, need, rule in rules:
        if flag is not None:
            chosen[name], how[name] = int(flag), f"--{name}"
            continue
        k = cc.choose_min_classes(counts, start, floor, need)
        chosen[name], how[name] = k, rule
        if k < start:
            how[name] += f", lowered from {start}: fewer than {need:.0%} of the labeled training slices had {start}"
            notes.append(f"{name} lowered to {k}: " + how[name])
    for name, _, _, _, need, _ in rules:
        frac = cc.fraction_at_least(counts, chosen[name])
        if frac < need:
            notes.append(f"warning: only {frac:.1%} of the labeled training slices have >= {chosen[name]} labels "
                         f"({name}); most PLC joint iterations will be skipped")
    return chosen["min_seg_classes"], chosen["min_contrastive_classes"], how


def preprocess_custom(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split_file: str | os.PathLike | None = None,
    target_resolution: Sequence[float] | None = None,
    image_size: Sequence[int] | None = None,
    channel: int | None = None,
    seed: int = 0,
    min_seg_classes: int | None = None,
    min_contrastive_classes: int | None = None,
    crf_params: Sequence[float] | None = None,
    contrastive_background: bool | None = None,
    n4: bool = False,
    n4_shrink: int = 1,
    ids: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Preprocess an MSD / nnU-Net folder into ``out_dir`` (replaced atomically on success).

    Args:
        raw_dir: the folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ...).
        out_dir: destination data dir; must not be inside ``raw_dir`` (nor contain it).
        split_file: JSON splits (``configs.custom.normalize_splits`` format); default: derived
            from ``seed`` (``data.custom_config.default_split``).
        target_resolution: in-plane ``(x, y)`` mm; default: median spacing.
        image_size: ``(H, W)`` multiples of 32; default: derived.
        channel: channel of multi-channel images.
        seed: seed of the default split.
        min_seg_classes, min_contrastive_classes: joint-sampler thresholds; default: derived.
        crf_params: dense-CRF parameters; default: the originals' (``DEFAULT_CRF``).
        contrastive_background: background as a contrastive class; default: on for C = 2.
        n4, n4_shrink: N4 bias correction first, and its shrink factor.
        ids: optional subset of case ids.
        progress: show a tqdm progress bar.

    Returns:
        The ``dataset.json`` dict plus ``seconds`` and ``notes`` (lines for the user).
    """
    from tqdm import tqdm

    from common.atomic import atomic_dir

    t0 = time.time()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    check_inputs(raw_dir, out_dir, n4, n4_shrink)
    folder = read_folder(raw_dir, channel)
    sources = select_ids(list(folder.sources), ids, raw_dir)
    all_ids = [s.id for s in sources]
    labeled_ids = [s.id for s in sources if s.label_path is not None]
    source = str(raw_dir / "dataset.json")
    if split_file:
        splits = cc.load_split_file(split_file, all_ids, labeled_ids)
    else:
        splits = cc.default_split(labeled_ids, all_ids, seed, source)
    crf = cc.parse_crf_params(None) if crf_params is None else tuple(crf_params)
    target, size, derived = _resolution_and_size(sources, target_resolution, image_size)
    placeholder = cc.build_config(folder.label_names, target, size, 1, 2, crf, channel, source)
    counts: dict[str, np.ndarray] = {}
    present = np.zeros(placeholder.num_classes, bool)
    slices = 0
    notes: list[str] = []
    with atomic_dir(out_dir) as tmp:
        for src in tqdm(sources, desc="preprocess custom", unit="vol", disable=not progress):
            vol, img, lab = process_source(src, placeholder, tmp, n4=n4, n4_shrink=n4_shrink)
            slices += img.shape[0]
            if lab is not None:
                counts[src.id] = cc.labels_per_slice(lab)
                present[np.unique(vol.label)] = True
        train_counts = np.concatenate([counts[i] for i in cc.training_ids(splits)] or [np.zeros(0, np.int64)])
        min_seg, min_con, how = _min_classes(train_counts, placeholder.num_classes, min_seg_classes,
                                             min_contrastive_classes, notes)
        derived.update(how)
        cfg = cc.build_config(folder.label_names, target, size, min_seg, min_con, crf, channel, source,
                              contrastive_background)
        derived["contrastive_background"] = ("--contrastive_background" if contrastive_background is not None
                                             else "on for binary tasks (C = 2) only")
        absent = [n for n, p in zip(cfg.struct_names, present[1:]) if not p]
        if absent:
            notes.append(f"warning: structure(s) {', '.join(absent)} of {source} appear in no label file")
        summary = dataset_summary(custom.NAME, cfg, all_ids, labeled_ids, slices, raw_dir, n4=n4, n4_shrink=n4_shrink)
        summary.update({
            "config": custom.config_to_dict(cfg),
            "splits": splits,
            "split_source": str(Path(split_file).resolve()) if split_file else f"default split, seed {seed}",
            "derived": derived,
            "source": {"style": folder.style, "label_names": list(folder.label_names),
                       "channel_names": list(folder.channel_names), "channel": channel,
                       "channel_files": folder.channel_files,
                       "test_images": [str(p.resolve()) for p in folder.test_images]},
            "slice_stats": {"labeled_training_slices": int(train_counts.size),
                            "with_at_least_k_labels": {str(k): int((train_counts >= k).sum())
                                                       for k in range(1, cfg.num_classes + 1)}},
        })
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = time.time() - t0
    summary["notes"] = notes
    return summary


def describe(summary: dict[str, Any]) -> str:
    """Human-readable lines: the derived config and the splits (printed by the CLI)."""
    cfg, splits = summary["config"], summary["splits"]
    lines = [f"classes: {cfg['num_classes']} (background, {', '.join(cfg['struct_names'])})",
             f"target resolution: {cfg['target_resolution'][0]:g} x {cfg['target_resolution'][1]:g} mm "
             f"({summary['derived']['target_resolution']})",
             f"image size: {cfg['image_size'][0]} x {cfg['image_size'][1]} ({summary['derived']['image_size']})",
             f"min_seg_classes: {cfg['min_seg_classes']} ({summary['derived']['min_seg_classes']})",
             f"min_contrastive_classes: {cfg['min_contrastive_classes']} "
             f"({summary['derived']['min_contrastive_classes']})",
             f"contrastive_background: {str(cfg['contrastive_background']).lower()} "
             f"({summary['derived']['contrastive_background']})",
             f"crf_params: {','.join(f'{v:g}' for v in cfg['crf_params'])}",
             f"splits ({summary['split_source']}):"]
    for name, combs in splits.items():
        if name in custom.RESERVED:
            continue
        lines.append(f"  {name}: " + "; ".join(f"{c} {','.join(ids)}" for c, ids in combs.items()))
    for key in custom.RESERVED:
        lines.append(f"  {key} ({len(splits[key])}): {','.join(splits[key])}")
    if summary["source"]["test_images"]:
        lines.append(f"imagesTs: {len(summary['source']['test_images'])} image(s) for predict.py")
    return "\n".join(lines + summary.get("notes", []))
