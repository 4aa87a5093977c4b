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

import nibabel as nib
import numpy as np

import configs
from configs import custom
from configs.base import DatasetConfig
from data import geometry
from common.errors import InputError
from data.layouts import default_phases
from data.readers import RawVolume, VolumeSource, read_volume
from data.spacing import Spacing, parse_pixel_spacing

N4_CONVERGENCE_THRESHOLD = 0.001
N4_ITERATIONS = (50, 50, 50, 50)


def normalize_minmax(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(x - P1) / (P99 - P1)`` with percentiles of the whole volume; no clipping.

    Returns:
        (normalized float32 image, P1, P99).

    Raises:
        InputError: the volume is constant between the percentiles.
    """
    p1, p99 = np.percentile(image.astype(np.float64), [1.0, 99.0])
    if not p99 > p1:
        raise InputError(f"image intensities are constant (1st and 99th percentile both {p1:g})")
    return ((image - p1) / (p99 - p1)).astype(np.float32), float(p1), float(p99)


def n4_correct(image: np.ndarray, spacing: Sequence[float], shrink_factor: int = 1) -> np.ndarray:
    """N4 bias-field correction with the parameters of the originals (ORIGINAL_SPEC §5.2).

    The field is fitted on the image shrunk by ``shrink_factor`` in-plane (1 = full resolution,
    as the originals) and applied to the full-resolution image.

    Args:
        image: (H0, W0, D) raw intensities.
        spacing: voxel size (x, y, z) in mm.
        shrink_factor: in-plane shrink factor for fitting (>= 1).

    Returns:
        (H0, W0, D) float32 corrected image.
    """
    import SimpleITK as sitk

    if shrink_factor < 1:
        raise InputError(f"--n4_shrink={shrink_factor}: must be >= 1")
    full = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(image, (2, 1, 0)), dtype=np.float32))
    full.SetSpacing(tuple(float(s) for s in spacing[:3]))
    fit_img = sitk.Shrink(full, [int(shrink_factor), int(shrink_factor), 1]) if shrink_factor > 1 else full
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetConvergenceThreshold(N4_CONVERGENCE_THRESHOLD)
    corrector.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    corrector.Execute(fit_img)
    log_field = corrector.GetLogBiasFieldAsImage(full)
    corrected = sitk.GetArrayFromImage(full) / np.exp(sitk.GetArrayFromImage(log_field))  # (D, W0, H0)
    return np.transpose(corrected, (2, 1, 0)).astype(np.float32)


def preprocess_volume(
    image: np.ndarray,
    spacing: Sequence[float],
    cfg: DatasetConfig,
    label: np.ndarray | None = None,
    n4: bool = False,
    n4_shrink: int = 1,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess one volume for the network.

    Args:
        image: (H0, W0, D) raw image.
        spacing: voxel size in mm, at least (x, y).
        cfg: dataset config (``target_resolution``, ``image_size``).
        label: optional (H0, W0, D) integer label.
        n4: apply N4 bias-field correction first.
        n4_shrink: shrink factor of the N4 fit.

    Returns:
        image (D, H, W) float32, label (D, H, W) int16 or None, and the geometry ``meta``
        (``native_shape``, ``spacing``, ``target_resolution``, ``scale``, ``rescaled_shape``,
        ``image_size``, ``crop_pad``, ``normalization``, ``n4``) used by ``data.geometry``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"image has {image.ndim} dimensions {image.shape}, expected 3 (H, W, D)")
    if not np.all(np.isfinite(image)):
        raise InputError("image contains NaN/Inf voxels")
    if label is not None and tuple(np.shape(label)) != image.shape:
        raise InputError(f"label shape {tuple(np.shape(label))} differs from image shape {image.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) < 2 or not all(s > 0 and np.isfinite(s) for s in spacing):
        raise InputError(f"invalid voxel spacing {spacing}")
    work = n4_correct(image, spacing + (1.0,) * (3 - len(spacing)), n4_shrink) if n4 else image.astype(np.float32)
    work, p1, p99 = normalize_minmax(work)
    scale = geometry.scale_factors(spacing, cfg.target_resolution)
    img, lab, geo = resample_and_crop(work, label, scale, cfg.image_size)
    meta = {
        "native_shape": [int(v) for v in image.shape],
        "spacing": list(spacing),
        "target_resolution": [float(v) for v in cfg.target_resolution],
        **geo,
        "normalization": {"p1": p1, "p99": p99},
        "n4": bool(n4),
        "n4_shrink": int(n4_shrink) if n4 else None,
    }
    return img, lab, meta


def resample_and_crop(image: np.ndarray, label: np.ndarray | None, scale: Sequence[float],
                      image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """In-plane rescale by ``scale`` (order 1 image, order 0 label) and centre crop/pad to ``image_size``.

    Args:
        image: (H0, W0, D) normalized image.
        label: optional (H0, W0, D) integer label.
        scale: in-plane scale factors (x, y).
        image_size: network size (H, W).

    Returns:
        image (D, H, W) float32, label (D, H, W) int16 or None, and the geometry part of ``meta``
        (``scale``, ``rescaled_shape``, ``image_size``, ``crop_pad``) that ``data.geometry`` inverts.
    """
    img_r = geometry.rescale_inplane(image, scale, order=1)  # (x, y, D)
    img_c = geometry.crop_or_pad(img_r, image_size).astype(np.float32)  # (H, W, D)
    lab_out = None
    if label is not None:
        lab_r = geometry.rescale_inplane(np.asarray(label), scale, order=0)  # (x, y, D)
        lab_out = np.transpose(geometry.crop_or_pad(np.rint(lab_r).astype(np.int16), image_size), (2, 0, 1))
    geo = {
        "scale": [float(v) for v in scale],
        "rescaled_shape": [int(img_r.shape[0]), int(img_r.shape[1])],
        "image_size": [int(v) for v in image_size],
        "crop_pad": geometry.crop_pad_offsets(img_r.shape[:2], image_size),
    }
    return np.transpose(img_c, (2, 0, 1)), lab_out, geo  # (D, H, W)


def preprocessed_affine(affine: np.ndarray, meta: dict) -> np.ndarray:
    """Affine of the preprocessed grid: voxel (i, j, k) -> world, consistent with the resampling.

    Rescaled voxel ``u`` sits at native coordinate ``(u + 0.5) * H0 / x - 0.5`` (scikit-image
    grid mode); crop/pad shifts ``u`` by the crop start or minus the pad offset.
    """
    out = np.array(affine, dtype=np.float64)
    for axis in range(2):
        n0, n_r = meta["native_shape"][axis], meta["rescaled_shape"][axis]
        cp = meta["crop_pad"][axis]
        shift = cp.get("start", 0) - cp.get("offset", 0)
        ratio = n0 / n_r
        out[:3, 3] = out[:3, 3] + np.asarray(affine)[:3, axis] * ((shift + 0.5) * ratio - 0.5)
        out[:3, axis] = np.asarray(affine)[:3, axis] * ratio
    return out


def select_ids(sources: list[VolumeSource], ids: Sequence[str] | None, raw_dir: Path) -> list[VolumeSource]:
    """The sources whose id is in ``ids`` (all when ``ids`` is empty); unknown ids raise ``InputError``."""
    if not ids:
        return sources
    known = {s.id for s in sources}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(f"--ids: unknown volume id(s) {', '.join(unknown)} in {raw_dir} "
                         f"(found {len(known)}: {', '.join(sorted(known)[:6])}...)")
    return [s for s in sources if s.id in set(ids)]


def check_inputs(raw_dir: Path, out_dir: Path, n4: bool, n4_shrink: int) -> None:
    """``--raw_dir`` exists, ``--out_dir`` may be replaced, ``--n4_shrink`` is valid."""
    if not raw_dir.is_dir():
        raise InputError(f"--raw_dir={raw_dir}: directory not found")
    _check_dirs(raw_dir, out_dir)
    if n4 and int(n4_shrink) < 1:
        raise InputError(f"--n4_shrink={n4_shrink}: must be >= 1")


def _check_dirs(raw_dir: Path, out_dir: Path) -> None:
    raw, out = raw_dir.resolve(), out_dir.resolve()
    if out == raw or raw in out.parents:
        raise InputError(f"--out_dir={out_dir} is inside --raw_dir={raw_dir}; inputs are never modified")
    if out in raw.parents:
        raise InputError(f"--out_dir={out_dir} contains --raw_dir={raw_dir}; it would be replaced")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out_dir={out_dir} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset.json").is_file():
        raise InputError(f"--out_dir={out_dir} exists, is not empty and is not a preprocessed data dir "
                         "(no dataset.json); refusing to replace it")


def _header(spacing_known: bool, dtype: Any = None) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    if spacing_known:
        hdr.set_xyzt_units("mm")
    else:
        hdr["descrip"] = b"voxel spacing unknown (see meta.json)"
    if dtype is not None:
        hdr.set_data_dtype(dtype)
    return hdr


def write_volume(dest: Path, vol: RawVolume, img: np.ndarray, lab: np.ndarray | None, meta: dict) -> None:
    """Write one preprocessed volume into ``dest/<id>/`` (``dest`` is a temporary directory)."""
    vdir = dest / vol.id
    vdir.mkdir(parents=True)
    aff = preprocessed_affine(vol.affine, meta)
    known = all(s is not None for s in vol.spacing)
    nib.save(nib.Nifti1Image(np.transpose(img, (1, 2, 0)).astype(np.float32), aff, _header(known)),
             str(vdir / "image.nii.gz"))
    if lab is not None:
        nib.save(nib.Nifti1Image(np.transpose(lab, (1, 2, 0)).astype(np.int16), aff, _header(known, np.int16)),
                 str(vdir / "label.nii.gz"))
        if vol.label_header is not None:
            nhdr = vol.label_header.copy()
            nhdr.set_data_dtype(np.int16)
        else:
            nhdr = _header(known, np.int16)
        native = nib.Nifti1Image(vol.label.astype(np.int16), vol.label_affine, nhdr)
        native.header.set_slope_inter(1.0, 0.0)
        nib.save(native, str(vdir / "native_label.nii.gz"))
    (vdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


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
    from common.atomic import atomic_dir
    from data.layouts import make_plan

    if dataset == custom.NAME:
        if phases and tuple(phases) != ("ED",):
            raise InputError(f"--phases={','.join(phases)}: phases apply to ACDC-layout datasets only")
        from data.preprocess_custom import preprocess_custom

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


def process_source(source: VolumeSource, cfg: DatasetConfig, dest: Path, n4: bool = False,
                   n4_shrink: int = 1) -> tuple[RawVolume, np.ndarray, np.ndarray | None]:
    """Read, preprocess and write one raw volume into ``dest/<id>/``.

    Returns:
        The raw volume, the preprocessed image (D, H, W) and label (D, H, W) or None.
    """
    vol = read_volume(source, cfg.num_classes)
    try:
        img, lab, meta = preprocess_volume(vol.image, vol.spacing, cfg, vol.label, n4=n4, n4_shrink=n4_shrink)
    except InputError as exc:
        raise InputError(f"{source.image_path}: {exc}") from None
    meta.update({
        "id": vol.id,
        "affine": np.asarray(vol.affine).tolist(),
        "source_image": str(source.image_path),
        "source_label": str(source.label_path) if source.label_path else None,
        "info": {k: v for k, v in source.info.items()},
    })
    write_volume(dest, vol, img, lab, meta)
    return vol, img, lab


def dataset_summary(dataset: str, cfg: DatasetConfig, ids: Sequence[str], labeled: Sequence[str], slices: int,
                    raw_dir: Path, n4: bool, n4_shrink: int, phases: Sequence[str] = ("ED",)) -> dict[str, Any]:
    """The common part of ``dataset.json`` (docs/INTERFACES.md)."""
    return {
        "dataset": dataset,
        "ids": list(ids),
        "labeled_ids": list(labeled),
        "n4": bool(n4),
        "n4_shrink": int(n4_shrink) if n4 else None,
        "phases": list(phases),
        "image_size": list(cfg.image_size),
        "target_resolution": list(cfg.target_resolution),
        "num_classes": cfg.num_classes,
        "struct_names": list(cfg.struct_names),
        "num_slices": int(slices),
        "raw_dir": str(Path(raw_dir).resolve()),
    }


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
    from data import custom_config as cc
    from data.preprocess_custom import describe, preprocess_custom

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
