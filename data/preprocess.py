"""Preprocessing of raw volumes (ORIGINAL_SPEC §5.1-5.2) and the ``python -m data.preprocess`` CLI.

Steps per volume: optional N4 bias-field correction (SimpleITK; convergence threshold 0.001,
4 levels x 50 iterations, optional shrink factor), min-max normalization between the 1st and
99th percentile of the whole volume (no clipping), per-slice in-plane rescale to the target
resolution (linear for images, nearest for labels, no anti-aliasing), centre crop/pad to the
network size. Inputs already preprocessed by others (the originals' cropped files, SSL4MIS h5)
are read with ``--layout`` (``data.layouts``). The output directory layout is described in
docs/INTERFACES.md; it is written into a temporary directory and renamed at the end, so an error
leaves nothing behind.

Usage:
    python -m data.preprocess --dataset acdc --raw_dir /data/ACDC --out_dir /data/acdc_pp [--n4]
    python -m data.preprocess --dataset acdc --layout original_cropped --raw_dir acdc_bias_corr_cropped --out_dir P
    python -m data.preprocess --dataset acdc --layout ssl4mis_h5 --raw_dir SSL4MIS/data/ACDC --out_dir P \
        [--pixel_spacing X,Y,Z]
    python -m data.preprocess --dataset custom --raw_dir /data/Task05_Prostate --out_dir P --channel 0
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import configs
from configs import custom
from common.atomic import atomic_dir
from common.errors import InputError
from data.layouts import default_phases, make_plan
from data import custom_config as cc
from data.preprocess_custom import describe, preprocess_custom
from data.spacing import Spacing, parse_pixel_spacing
from data.volume_prep import check_inputs, select_ids, write_volume

def preprocess_dataset(
    dataset: str,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    n4: bool = False,
    n4_shrink: int = 1,
    phases: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    progress: bool = False,
    layout: str = "raw",
    pixel_spacing: Spacing | None = None,
) -> dict[str, Any]:
    """Preprocess a dataset directory into ``out_dir`` (replaced atomically on success).

    Args:
        dataset: one of ``configs.DATASETS``.
        raw_dir: the input directory, in the layout ``layout``.
        out_dir: destination data dir; must not be inside ``raw_dir`` (nor contain it).
        n4: apply N4 first; ``n4_shrink`` its shrink factor (``raw`` layout only).
        phases: ACDC phases (``ED`` and/or ``ES``); default ``ED`` (``ED,ES`` for ``ssl4mis_h5``).
        ids: optional subset of volume ids (unknown ids raise ``InputError``).
        progress: show a tqdm progress bar.
        layout: ``raw`` (the owners' files), ``original_cropped`` or ``ssl4mis_h5`` (``data.layouts``).
        pixel_spacing: voxel size ``(x, y, z-or-None)`` in mm for layouts that store none
            (``data.spacing.parse_pixel_spacing``).

    Returns:
        The ``dataset.json`` dict plus ``seconds``.
    """
    if dataset == custom.NAME:
        if phases and tuple(phases) != ("ED",):
            raise InputError(f"--phases={','.join(phases)}: phases apply to ACDC-layout datasets only")
        return preprocess_custom(raw_dir, out_dir, n4=n4, n4_shrink=n4_shrink, ids=ids, progress=progress)
    cfg = configs.get_config(dataset)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    check_inputs(raw_dir, out_dir, n4, n4_shrink)
    plan = make_plan(layout, cfg, raw_dir, phases, n4=n4, n4_shrink=n4_shrink, pixel_spacing=pixel_spacing)
    sources = select_ids(plan.sources, ids, raw_dir)
    from tqdm import tqdm

    t0 = time.time()
    labeled, slices, spacing_sources = [], 0, []
    with atomic_dir(out_dir) as tmp:
        for src in tqdm(sources, desc=f"preprocess {dataset}", unit="vol", disable=not progress):
            vol = plan.load(src)
            img, lab, meta = plan.process(vol)
            meta.update({
                "id": vol.id,
                "layout": layout,
                "affine": np.asarray(vol.affine).tolist(),
                "source_image": str(getattr(src, "where", vol.source.image_path)),
                "source_label": str(getattr(src, "where", vol.source.label_path)) if vol.label is not None else None,
                "info": {k: v for k, v in vol.source.info.items()},
            })
            write_volume(tmp, vol, img, lab, meta)
            slices += img.shape[0]
            spacing_sources.append(meta["spacing_source"])
            if lab is not None:
                labeled.append(vol.id)
        unknown = sorted({s for s in spacing_sources if "unknown" in s})
        warnings = list(plan.warnings)
        if unknown:
            n = sum("unknown" in s for s in spacing_sources)
            warnings.append(f"HD95/ASSD will be reported in pixels only: the voxel spacing of {n} volume(s) is not "
                            f"fully known ({'; '.join(unknown)}); give --pixel_spacing X,Y,Z for mm")
        summary = {
            "dataset": dataset,
            "layout": layout,
            "ids": [s.id for s in sources],
            "labeled_ids": labeled,
            "n4": bool(n4) if layout == "raw" else None,
            "n4_shrink": int(n4_shrink) if n4 else None,
            "phases": list(phases) if phases else list(default_phases(layout)),
            "image_size": list(cfg.image_size),
            "target_resolution": list(cfg.target_resolution) if layout != "ssl4mis_h5" else None,
            "num_classes": cfg.num_classes,
            "struct_names": list(cfg.struct_names),
            "num_slices": slices,
            "raw_dir": str(raw_dir.resolve()),
            "evaluation_grid": plan.grid,
            "spacing_sources": sorted(set(spacing_sources)),
            "surface_distance_units": "pixels (voxel spacing unknown)" if unknown else "mm",
            **plan.extra,
            "warnings": warnings,
        }
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = time.time() - t0
    return summary


def main(argv: list[str]) -> None:
    """absl entry point of ``python -m data.preprocess``."""
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("raw_dir", "out_dir"):
        if not getattr(FLAGS, name):
            raise InputError(f"--{name} is required")
    phases = tuple(p.strip() for p in FLAGS.phases.split(",") if p.strip()) if FLAGS.phases else None
    ids = [i.strip() for i in FLAGS.ids.split(",") if i.strip()] if FLAGS.ids else None
    if FLAGS.dataset == custom.NAME:
        if FLAGS.layout != "raw" or FLAGS.pixel_spacing:
            raise InputError("--layout / --pixel_spacing: not for --dataset custom (an MSD / nnU-Net folder)")
        s = _main_custom(FLAGS, phases, ids)
        res = "x".join(f"{v:g}" for v in sorted(set(s["target_resolution"]), key=s["target_resolution"].index))
        print(f"preprocessed {len(s['ids'])} volumes ({len(s['labeled_ids'])} labeled, {s['num_slices']} slices "
              f"of {s['image_size'][0]}x{s['image_size'][1]} at {res} mm, n4={s['n4']}) into {FLAGS.out_dir} "
              f"in {s['seconds']:.1f} s")
        return
    given = [f"--{n}" for n in CUSTOM_FLAGS if FLAGS[n].present]
    if given:
        raise InputError(f"{', '.join(given)}: only for --dataset custom (the {FLAGS.dataset} config is fixed)")
    s = preprocess_dataset(FLAGS.dataset, FLAGS.raw_dir, FLAGS.out_dir, n4=FLAGS.n4, n4_shrink=FLAGS.n4_shrink,
                           phases=phases, ids=ids, progress=sys.stderr.isatty(), layout=FLAGS.layout,
                           pixel_spacing=parse_pixel_spacing(FLAGS.pixel_spacing))
    for warning in s["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    res = s["target_resolution"]
    grid = f"at {res[0]:g} mm" if res else "resized from the stored grid"
    print(f"preprocessed {len(s['ids'])} volumes ({len(s['labeled_ids'])} labeled, {s['num_slices']} slices of "
          f"{s['image_size'][0]}x{s['image_size'][1]} {grid}, layout {s['layout']}, n4={s['n4']}) "
          f"into {FLAGS.out_dir} in {s['seconds']:.1f} s")
    print(f"evaluation grid: {s['evaluation_grid']}; HD95/ASSD units: {s['surface_distance_units']}")


CUSTOM_FLAGS = ("split_file", "target_resolution", "image_size", "channel", "seed", "min_seg_classes",
                "min_contrastive_classes", "contrastive_background", "crf_params")


def _main_custom(FLAGS: Any, phases: Sequence[str], ids: Sequence[str] | None) -> dict[str, Any]:
    """``--dataset custom``: flags -> :func:`data.preprocess_custom.preprocess_custom`; prints what was derived."""

    if phases and tuple(phases) != ("ED",):
        raise InputError(f"--phases={','.join(phases)}: phases apply to ACDC-layout datasets only")
    s = preprocess_custom(
        FLAGS.raw_dir, FLAGS.out_dir, split_file=FLAGS.split_file,
        target_resolution=cc.parse_pair(FLAGS.target_resolution, "target_resolution", float),
        image_size=cc.parse_pair(FLAGS.image_size, "image_size", int), channel=FLAGS.channel, seed=FLAGS.seed,
        min_seg_classes=FLAGS.min_seg_classes, min_contrastive_classes=FLAGS.min_contrastive_classes,
        crf_params=cc.parse_crf_params(FLAGS.crf_params), contrastive_background=FLAGS.contrastive_background,
        n4=FLAGS.n4, n4_shrink=FLAGS.n4_shrink, ids=ids,
        progress=sys.stderr.isatty())
    print(describe(s))
    return s


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_enum("dataset", None, list(configs.DATASETS), "dataset config to use (custom: an MSD / nnU-Net "
                      "folder with its dataset.json)")
    flags.DEFINE_string("raw_dir", None, "raw dataset directory (layout of the dataset's owners)")
    flags.DEFINE_string("out_dir", None, "output (preprocessed) data directory; replaced atomically")
    flags.DEFINE_bool("n4", False, "apply N4 bias-field correction before normalization")
    flags.DEFINE_integer("n4_shrink", 1, "in-plane shrink factor for the N4 fit (1 = full resolution; 2 is ~4x faster)")
    flags.DEFINE_string("phases", None, "ACDC phases: ED, ES or ED,ES (ES ids get the suffix _ES); default ED, "
                        "ED,ES for --layout ssl4mis_h5")
    flags.DEFINE_enum("layout", "raw", ["raw", "original_cropped", "ssl4mis_h5"],
                      "input layout: raw (the owners' files), original_cropped (the originals' img_cropped / "
                      "mask_cropped files, taken as they are) or ssl4mis_h5 (SSL4MIS ACDC h5 volumes, slices, lists)")
    flags.DEFINE_string("pixel_spacing", None, "voxel size in mm for layouts that store none: MM (in-plane; slice "
                        "spacing unknown) or X,Y,Z; without it HD95/ASSD are reported in pixels only")
    flags.DEFINE_string("ids", None, "comma-separated subset of volume ids (default: all)")
    # --dataset custom only (README "Your own data").
    flags.DEFINE_string("split_file", None, 'custom: JSON splits {"tr1": {"c1": [ids]}, "unlabeled": [ids], '
                        '"val": [ids], "test": [ids]} (default: derived from --seed)')
    flags.DEFINE_string("target_resolution", None, "custom: in-plane resolution X,Y in mm (default: median spacing)")
    flags.DEFINE_string("image_size", None, "custom: network input size H,W, multiples of 32 (default: derived)")
    flags.DEFINE_integer("channel", None, "custom: channel of multi-channel images to segment")
    flags.DEFINE_integer("seed", 0, "custom: seed of the default split")
    flags.DEFINE_integer("min_seg_classes", None, "custom: labels a slice needs for the joint segmentation batch "
                         "(default: derived)")
    flags.DEFINE_integer("min_contrastive_classes", None, "custom: labels a slice needs for the joint contrastive "
                         "batch (default: all classes, lowered when too few slices have them)")
    flags.DEFINE_bool("contrastive_background", None, "custom: background as a class of the pseudo-label "
                      "contrastive loss (default: on for binary tasks only)")
    flags.DEFINE_string("crf_params", None, "custom: dense-CRF a_sxy,a_srgb,a_w1,g_sxy,g_w2,n_iter "
                        "(default: the originals' 0.01,0.5,10,10,30,30)")
    flags.mark_flag_as_required("dataset")


if __name__ == "__main__":
    from absl import app

    from common.cli import run_main

    _define_flags()
    app.run(run_main(main))
