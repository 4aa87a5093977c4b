"""Per-volume preprocessing (ORIGINAL_SPEC §5.1-5.2) and the writing of one preprocessed volume.

Steps per volume: optional N4 bias-field correction (SimpleITK; convergence threshold 0.001,
4 levels x 50 iterations, optional shrink factor), min-max normalization between the 1st and
99th percentile of the whole volume (no clipping), per-slice in-plane rescale to the target
resolution (linear for images, nearest for labels, no anti-aliasing), centre crop/pad to the
network size. Used by ``data.layouts`` (per layout), ``data.preprocess`` (the CLI) and
``data.preprocess_custom``; the output directory layout is described in docs/INTERFACES.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from configs.base import DatasetConfig
from data import geometry
from common.errors import InputError
from data.readers import RawVolume, VolumeSource, read_volume

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
