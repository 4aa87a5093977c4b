"""Reader of the originals' preprocessed layout (``--layout original_cropped``, ORIGINAL_SPEC §5.2).

The originals' ``scripts/create_cropped_imgs.py`` (ACDC and MSD prostate; it has no MM-WHS mode)
writes, per volume, ``<root>/<folder>/img_cropped.nii.gz`` (image already normalized, resampled
in-plane to the target resolution and centre cropped/padded to the network size) and
``mask_cropped.nii.gz`` (int16 labels on the same grid); their dataloaders read exactly these files
(``data_path_tr_cropped``). ACDC folders are ``patientXXX`` (ED frame only), prostate folders
``XXX`` (``patientXXX`` is accepted too). Volume id = the number zero-padded to 3 digits.

Nothing is resampled again: the files' grid *is* the network grid, so evaluation on data read
this way scores Dice on that grid (ACDC: 1.36719 mm, 192 x 192), not on the native grid of the
papers' protocol. Spacing: the in-plane spacing of the header must equal the dataset's target
resolution. A slice spacing of exactly 1.0 is NIfTI's default when a writer records none (the
public ACDC copies store 1.0 although ACDC slices lie 5-10 mm apart), so it counts as unknown;
``--pixel_spacing`` states the spacing instead.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from configs.base import DatasetConfig
from common.errors import InputError
from data.nifti_io import check_same_grid, load_nifti, to_label_array
from data.readers import RawVolume, VolumeSource, nifti_path, require_dir, visible_entries
from data.spacing import Spacing, affine_with_spacing

LAYOUT = "original_cropped"
RAW_LAYOUTS = ("acdc", "prostate_md")  # DatasetConfig.raw_layout values that the originals cropped
IMAGE_STEM, LABEL_STEM = "img_cropped", "mask_cropped"
SPACING_RTOL = 1e-3
UNSET_SLICE_SPACING = 1.0


def find_cropped(raw_dir: str | os.PathLike, raw_layout: str,
                 ignored: list[str] | None = None) -> list[VolumeSource]:
    """All ``<folder>/img_cropped.nii.gz`` volumes below ``raw_dir``, sorted by id.

    Args:
        raw_dir: the originals' ``data_path_tr_cropped`` folder.
        raw_layout: the dataset's raw layout (``acdc`` or ``prostate_md``).
        ignored: if given, receives the names of the folders skipped because they are not named
            ``patientXXX`` or ``XXX``.

    Raises:
        InputError: no such layout for the dataset, missing directory, no volume folders, or two
            folders giving the same id (``patient001`` and ``001``).
    """
    if raw_layout not in RAW_LAYOUTS:
        raise InputError(f"--layout={LAYOUT}: the originals wrote cropped files only for ACDC-layout and "
                         f"prostate_md datasets (create_cropped_imgs.py), not for the {raw_layout} layout; "
                         "use --layout raw")
    raw_dir = Path(raw_dir)
    require_dir(raw_dir)
    by_id: dict[str, VolumeSource] = {}
    for name in visible_entries(raw_dir):
        m = re.fullmatch(r"(?:patient)?(\d+)", name)
        if not m or not (raw_dir / name).is_dir():
            if ignored is not None and (raw_dir / name).is_dir():
                ignored.append(name)
            continue
        vid = f"{int(m.group(1)):03d}"
        if vid in by_id:
            raise InputError(f"--raw_dir={raw_dir}: folders {by_id[vid].info['folder']} and {name} both give "
                             f"volume id {vid}")
        info = {"folder": name, **({"phase": "ED"} if raw_layout == "acdc" else {})}
        by_id[vid] = VolumeSource(id=vid, layout=LAYOUT, image_path=nifti_path(raw_dir / name, IMAGE_STEM),
                                  label_path=nifti_path(raw_dir / name, LABEL_STEM), info=info)
    if not by_id:
        raise InputError(f"--raw_dir={raw_dir}: no patientXXX/ or XXX/ folders with {IMAGE_STEM}.nii.gz found "
                         f"(layout {LAYOUT})")
    return [by_id[k] for k in sorted(by_id)]


def _close(a: float, b: float) -> bool:
    return abs(abs(a) - abs(b)) <= SPACING_RTOL * abs(b)


def read_cropped(source: VolumeSource, cfg: DatasetConfig, pixel_spacing: Spacing | None = None) -> RawVolume:
    """Load and check one cropped volume.

    Args:
        source: from :func:`find_cropped`.
        cfg: dataset config (``image_size``, ``target_resolution``, ``num_classes``).
        pixel_spacing: ``--pixel_spacing`` (x, y, z-or-None) overriding the header.

    Returns:
        A :class:`RawVolume` whose arrays are ``(H, W, D)`` on the network grid; ``spacing`` has
        ``None`` for an unknown slice spacing.

    Raises:
        InputError: missing image or mask, unreadable file, wrong dimensions, NaN/Inf, image and mask
            of different shapes, labels outside ``0..C-1``, in-plane size other than the network size,
            in-plane spacing other than the target resolution.
    """
    img = load_nifti(source.image_path, ndims=(3,), what="image")
    lab = load_nifti(source.label_path, ndims=(3,), what="mask")
    check_same_grid(img, lab, img.data.shape)
    label = to_label_array(lab, cfg.num_classes)
    size = tuple(int(v) for v in img.data.shape[:2])
    if size != tuple(cfg.image_size):
        raise InputError(f"{source.image_path}: in-plane size {size[0]}x{size[1]} is not the {cfg.name} network size "
                         f"{cfg.image_size[0]}x{cfg.image_size[1]}; the {LAYOUT} layout is read without "
                         "resampling or cropping")
    if pixel_spacing is not None:
        spacing, origin = tuple(pixel_spacing), "--pixel_spacing"
        what = f"--pixel_spacing in-plane {spacing[0]:g} x {spacing[1]:g} mm"
    else:
        z = float(img.spacing[2])
        spacing = (float(img.spacing[0]), float(img.spacing[1]), None if z == UNSET_SLICE_SPACING else z)
        origin = "header"
        what = f"{source.image_path}: in-plane spacing {spacing[0]:g} x {spacing[1]:g} mm"
    if not (_close(spacing[0], cfg.target_resolution[0]) and _close(spacing[1], cfg.target_resolution[1])):
        raise InputError(f"{what} differs from the {cfg.name} target resolution "
                         f"{cfg.target_resolution[0]:g} mm; the {LAYOUT} layout is read without resampling "
                         "(use --layout raw on the original files)")
    affine, label_affine = img.affine, lab.affine
    if pixel_spacing is not None:
        affine, label_affine = affine_with_spacing(affine, spacing), affine_with_spacing(label_affine, spacing)
    return RawVolume(id=source.id, image=np.asarray(img.data, dtype=np.float32), label=label,
                     spacing=spacing, affine=affine, header=img.header, label_affine=label_affine,
                     label_header=lab.header, source=source,
                     spacing_source=origin if spacing[2] is not None else f"{origin} (slice spacing unknown)")


def check_phases(phases: Sequence[str]) -> None:
    """The originals' cropped files hold one phase (ACDC: ED); anything else is refused."""
    if tuple(phases) != ("ED",):
        raise InputError(f"--phases={','.join(phases)}: the {LAYOUT} layout holds the ED frame only "
                         "(create_cropped_imgs.py reads _frame01)")
