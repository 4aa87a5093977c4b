"""The input layouts of ``python -m data.preprocess --layout``: find, read, bring onto the network grid.

- ``raw``: the owners' files (``data.readers``); N4 (optional), 1-99 percentile normalization,
  in-plane resampling to the target resolution, crop/pad. Evaluation grid: the native grid.
- ``original_cropped``: the originals' ``img_cropped`` / ``mask_cropped`` files (``data.cropped``),
  already normalized, resampled and cropped: taken as they are, geometry = identity. Evaluation grid:
  that cropped grid (ACDC 1.36719 mm, 192 x 192), not the native one.
- ``ssl4mis_h5``: SSL4MIS ACDC h5 volumes / slices (``data.ssl4mis``); 1-99 percentile normalization,
  then every slice resized to the network size (as SSL4MIS resizes to its patch size; no spacing is
  stored, so nothing can be resampled to millimetres). Evaluation grid: the h5 grid (what SSL4MIS
  papers score on).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from configs.base import DatasetConfig
from data import cropped, readers, ssl4mis
from common.errors import InputError
from data.readers import RawVolume
from data.spacing import Spacing
from data.volume_prep import normalize_minmax, preprocess_volume, resample_and_crop

LAYOUTS = ("raw", "original_cropped", "ssl4mis_h5")


@dataclass
class LayoutPlan:
    """What preprocessing does for one layout.

    Attributes:
        sources: volume sources (objects with ``.id``), sorted by id.
        load: reads one source into a :class:`RawVolume` (raises ``InputError`` on bad input).
        process: ``RawVolume -> (image (D,H,W) float32, label (D,H,W) int16 | None, meta)``.
        grid: the grid evaluation scores on (for ``dataset.json`` and reports).
        extra: further ``dataset.json`` entries.
        warnings: messages for the user (printed by the CLI, stored in ``dataset.json``).
    """

    sources: list[Any]
    load: Callable[[Any], RawVolume]
    process: Callable[[RawVolume], tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]
    grid: str
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_phases(layout: str) -> tuple[str, ...]:
    """``ED`` for ``raw`` and ``original_cropped``; ``ED,ES`` for ``ssl4mis_h5`` (its split uses both)."""
    return ("ED", "ES") if layout == "ssl4mis_h5" else ("ED",)


def _meta_common(vol: RawVolume) -> dict[str, Any]:
    return {"native_shape": [int(v) for v in vol.image.shape],
            "spacing": [None if s is None else float(s) for s in vol.spacing],
            "spacing_source": vol.spacing_source}


def identity_volume(vol: RawVolume, cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """A volume already on the network grid: transposed to (D, H, W), values unchanged, identity geometry."""
    size = [int(v) for v in vol.image.shape[:2]]
    meta = {**_meta_common(vol), "target_resolution": [float(v) for v in cfg.target_resolution],
            "scale": [1.0, 1.0], "rescaled_shape": size, "image_size": size,
            "crop_pad": [{"mode": "none"}, {"mode": "none"}],
            "normalization": "as stored (the originals normalized 1-99 percentile before resampling)",
            "n4": None, "n4_shrink": None}
    label = None if vol.label is None else np.transpose(vol.label, (2, 0, 1)).astype(np.int16)
    return np.transpose(vol.image, (2, 0, 1)).astype(np.float32), label, meta  # (D, H, W)


def resized_volume(vol: RawVolume, cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Normalize (1-99 percentile) and resize every slice to the network size (no spacing needed)."""
    work, p1, p99 = normalize_minmax(vol.image)
    h0, w0 = vol.image.shape[:2]
    scale = (cfg.image_size[0] / h0, cfg.image_size[1] / w0)
    img, lab, geo = resample_and_crop(work, vol.label, scale, cfg.image_size)
    meta = {**_meta_common(vol), "target_resolution": None, **geo, "normalization": {"p1": p1, "p99": p99},
            "n4": False, "n4_shrink": None}
    return img, lab, meta


def _raw_plan(cfg: DatasetConfig, raw_dir: os.PathLike, phases: Sequence[str], n4: bool, n4_shrink: int,
              pixel_spacing: Spacing | None) -> LayoutPlan:
    if pixel_spacing is not None:
        raise InputError("--pixel_spacing: applies to --layout original_cropped and ssl4mis_h5; raw NIfTI files "
                         "carry their spacing in the header")
    if cfg.raw_layout != "acdc" and tuple(phases) != ("ED",):
        raise InputError(f"--phases={','.join(phases)}: phases apply to ACDC-layout datasets only, not {cfg.name}")

    def process(vol: RawVolume) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        try:
            img, lab, meta = preprocess_volume(vol.image, vol.spacing, cfg, vol.label, n4=n4, n4_shrink=n4_shrink)
        except InputError as exc:
            raise InputError(f"{vol.source.image_path}: {exc}") from None
        meta["spacing_source"] = "header"
        return img, lab, meta

    return LayoutPlan(sources=readers.find_volumes(cfg.raw_layout, raw_dir, phases),
                      load=lambda src: readers.read_volume(src, cfg.num_classes), process=process,
                      grid="native grid of the original files")


def _cropped_plan(cfg: DatasetConfig, raw_dir: os.PathLike, phases: Sequence[str],
                  pixel_spacing: Spacing | None) -> LayoutPlan:
    cropped.check_phases(phases)
    res = cfg.target_resolution
    ignored: list[str] = []
    sources = cropped.find_cropped(raw_dir, cfg.raw_layout, ignored)
    warnings = [f"--raw_dir={raw_dir}: {len(ignored)} folder(s) not named patientXXX/ or XXX/ ignored: "
                f"{', '.join(ignored[:5])}{', ...' if len(ignored) > 5 else ''}"] if ignored else []
    return LayoutPlan(
        sources=sources,
        load=lambda src: cropped.read_cropped(src, cfg, pixel_spacing),
        process=lambda vol: identity_volume(vol, cfg),
        grid=f"the originals' cropped grid ({res[0]:g} x {res[1]:g} mm in-plane, {cfg.image_size[0]}x"
             f"{cfg.image_size[1]}), not the native grid of the papers' protocol", warnings=warnings)


def _h5_plan(cfg: DatasetConfig, raw_dir: os.PathLike, phases: Sequence[str],
             pixel_spacing: Spacing | None) -> LayoutPlan:
    if cfg.raw_layout != "acdc":
        raise InputError(f"--layout=ssl4mis_h5: SSL4MIS h5 files hold ACDC; --dataset={cfg.name} is not an "
                         "ACDC-layout dataset")
    every = ssl4mis.find_h5(raw_dir)
    sources = [s for s in every if s.phase in phases]
    lists = ssl4mis.read_lists(raw_dir)
    warnings, extra = [], {}
    if lists is None:
        warnings.append(f"{raw_dir}: no train.list / val.list / test.list; the split comes from configs only")
    else:
        ssl4mis.check_lists(lists, every, raw_dir)
        found = ssl4mis.split_from_lists(lists)
        diffs = ssl4mis.compare_with_config(found) if cfg.name == "acdc" else []
        unchecked = ssl4mis.unchecked_lists(lists, raw_dir) if cfg.name == "acdc" else []
        warnings += [f"SSL4MIS lists differ from configs.acdc's ssl4mis split: {d}" for d in diffs] + unchecked
        matches = (False if diffs else None if unchecked else True) if cfg.name == "acdc" else None
        extra["ssl4mis_lists"] = {**{k: len(v) for k, v in lists.items()}, **found, "matches_configs": matches,
                                  "not_compared": unchecked}
    return LayoutPlan(
        sources=sources, load=lambda src: ssl4mis.read_h5(src, cfg.num_classes, pixel_spacing),
        process=lambda vol: resized_volume(vol, cfg),
        grid="the SSL4MIS h5 grid (each volume's stored in-plane size; slices resized to "
             f"{cfg.image_size[0]}x{cfg.image_size[1]} for the network and back)",
        extra=extra, warnings=warnings)


def make_plan(layout: str, cfg: DatasetConfig, raw_dir: str | os.PathLike, phases: Sequence[str] | None,
              n4: bool = False, n4_shrink: int = 1, pixel_spacing: Spacing | None = None) -> LayoutPlan:
    """The :class:`LayoutPlan` of ``layout`` for dataset ``cfg`` (checks the flags that do not apply).

    Raises:
        InputError: unknown layout, a flag the layout cannot honour (``--n4`` on already preprocessed
            files, ``--pixel_spacing`` on raw files, phases the layout does not hold), or any error of
            the layout's reader while listing the volumes.
    """
    if layout not in LAYOUTS:
        raise InputError(f"--layout={layout}: expected one of {', '.join(LAYOUTS)}")
    phases = tuple(phases) if phases else default_phases(layout)
    bad = [p for p in phases if p not in readers.PHASES]
    if bad:
        raise InputError(f"--phases={','.join(phases)}: expected ED, ES or ED,ES")
    if layout == "raw":
        return _raw_plan(cfg, raw_dir, phases, n4, n4_shrink, pixel_spacing)
    if n4:
        raise InputError(f"--n4: the {layout} files are already intensity-preprocessed; N4 applies to --layout raw")
    if layout == "original_cropped":
        return _cropped_plan(cfg, raw_dir, phases, pixel_spacing)
    return _h5_plan(cfg, raw_dir, phases, pixel_spacing)
