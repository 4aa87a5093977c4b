"""Readers for the raw datasets in the layouts their owners distribute (DESIGN.md).

``find_volumes(layout, raw_dir, phases)`` lists the volumes of a raw dataset directory as
:class:`VolumeSource` records (id and file paths); ``read_volume(source, num_classes)`` loads one
as a :class:`RawVolume` with image, label, spacing, affine and header. Arrays keep the on-disk
orientation ``(H0, W0, D)`` (no reorientation, as in the originals).

Layouts:
- ``acdc`` (also the synthetic dataset): ``[training/]patientXXX/Info.cfg`` with ``ED``/``ES``
  frame numbers and ``patientXXX_frameYY.nii.gz`` + ``_gt``. Id ``"XXX"`` for ED, ``"XXX_ES"`` for ES.
- ``prostate_md``: MSD ``imagesTr/prostate_NN.nii.gz`` (4-D, channel 0 = T2) +
  ``labelsTr/prostate_NN.nii.gz``, or the originals' ``<id>/img.nii.gz`` + ``<id>/mask.nii.gz``.
  Id = case number zero-padded to 3 digits.
- ``mmwhs``: ``[mr_train/]mr_train_10NN_image.nii.gz`` + ``_label.nii.gz`` (labels
  205..850 remapped to 1..7), or the originals' ``<id>/img.nii.gz`` + ``<id>/seg.nii.gz``
  (labels already 0..7). Id ``"10NN"``.
- ``custom``: an MSD / nnU-Net folder, listed by :mod:`data.msd_folder`; 3-D or 4-D images
  (``VolumeSource.channel`` picks the channel of a 4-D file), labels on the image's grid
  (shape and affine checked).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from configs.mmwhs import LABEL_MAP as MMWHS_LABEL_MAP
from common.errors import InputError
from data.nifti_io import (NiftiVolume, check_same_affine, check_same_grid, load_nifti, select_channel,
                           to_label_array)

LAYOUTS = ("acdc", "prostate_md", "mmwhs")
PHASES = ("ED", "ES")
INFO_REQUIRED = ("ED", "ES")


@dataclass(frozen=True)
class VolumeSource:
    """Where one raw volume lives.

    Attributes:
        id: volume id as used by the split lists (``"001"``, ``"001_ES"``, ``"000"``, ``"1001"``).
        layout: ``acdc``, ``prostate_md``, ``mmwhs`` or ``original_cropped`` (``data.cropped``).
        image_path: image file.
        label_path: label file, or ``None`` when the volume is unlabeled.
        label_encoding: ``"index"`` (values are class indices) or ``"mmwhs"`` (205..850 values).
        info: extra facts (ACDC: phase, frame number and the Info.cfg fields).
        channel: ``custom`` layout: channel of a 4-D image file (``None``: the file must have one).
    """

    id: str
    layout: str
    image_path: Path
    label_path: Path | None
    label_encoding: str = "index"
    info: dict = field(default_factory=dict, compare=False, hash=False)
    channel: int | None = None


@dataclass
class RawVolume:
    """One raw volume in memory.

    Attributes:
        id: volume id.
        image: (H0, W0, D) float32 image (prostate: T2 channel).
        label: (H0, W0, D) int16 class indices, or ``None``.
        spacing: (x, y, z) voxel size in mm from the image header (``pixdim[1:4]``); the
            ``original_cropped`` and ``ssl4mis_h5`` layouts give ``None`` for an unknown axis.
        affine: (4, 4) image affine.
        header: image header (``None`` for the h5 layout, which has none).
        label_affine: (4, 4) affine of the label file (``None`` without label).
        label_header: header of the label file (``None`` without label or header).
        source: the :class:`VolumeSource` it was read from.
        spacing_source: where ``spacing`` comes from: ``header``, ``--pixel_spacing`` or ``unknown``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float | None, float | None, float | None]
    affine: np.ndarray
    header: nib.Nifti1Header | None
    label_affine: np.ndarray | None
    label_header: nib.Nifti1Header | None
    source: VolumeSource
    spacing_source: str = "header"


# ----------------------------------------------------------------------------------------------
# small helpers
def nifti_path(directory: Path, stem: str) -> Path:
    """``stem.nii.gz`` if present, else ``stem.nii`` if present, else the ``.nii.gz`` path."""
    gz = directory / f"{stem}.nii.gz"
    if gz.exists():
        return gz
    plain = directory / f"{stem}.nii"
    return plain if plain.exists() else gz


def visible_entries(directory: Path) -> list[str]:
    """Sorted entry names of ``directory`` without hidden ones (``.DS_Store``, ``._*`` forks)."""
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def require_dir(raw_dir: Path) -> None:
    """``InputError`` naming ``--raw_dir`` unless it is a directory."""
    if not raw_dir.is_dir():
        raise InputError(f"--raw_dir={raw_dir}: directory not found")


# ----------------------------------------------------------------------------------------------
# ACDC
def parse_info_cfg(path: str | os.PathLike) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``key: value`` lines) and check ED and ES are present.

    Returns:
        The fields as strings, e.g. ``{"ED": "1", "ES": "12", "Group": "DCM", ...}``.

    Raises:
        InputError: missing file, malformed line, missing or non-integer ED/ES.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: Info.cfg not found")
    fields: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise InputError(f"{path}: line {n} is not 'key: value': {line.strip()[:40]!r}")
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    missing = [k for k in INFO_REQUIRED if k not in fields]
    if missing:
        raise InputError(f"{path}: missing field(s) {', '.join(missing)}")
    for key in INFO_REQUIRED:
        try:
            frame = int(float(fields[key]))
        except ValueError:
            raise InputError(f"{path}: field {key} is not a frame number: {fields[key]!r}") from None
        if frame < 1 or float(fields[key]) != frame:
            raise InputError(f"{path}: field {key} is not a positive frame number: {fields[key]!r}")
    return fields


def acdc_source(patient_dir: str | os.PathLike, phase: str = "ED") -> VolumeSource:
    """Source of one ACDC patient folder for ``phase`` (``ED`` or ``ES``, frame from Info.cfg)."""
    patient_dir = Path(patient_dir)
    if phase not in PHASES:
        raise InputError(f"phase {phase!r}: expected one of {', '.join(PHASES)}")
    m = re.fullmatch(r"patient(\d+)", patient_dir.name)
    if not m:
        raise InputError(f"{patient_dir}: not an ACDC patient folder (expected patientXXX)")
    pid = m.group(1)
    info = parse_info_cfg(patient_dir / "Info.cfg")
    frame = int(float(info[phase]))
    stem = f"{patient_dir.name}_frame{frame:02d}"
    vid = pid if phase == "ED" else f"{pid}_ES"
    return VolumeSource(
        id=vid, layout="acdc", image_path=nifti_path(patient_dir, stem), label_path=nifti_path(patient_dir, stem + "_gt"),
        info={"phase": phase, "frame": frame, **info},
    )


def find_acdc(raw_dir: str | os.PathLike, phases: Sequence[str] = ("ED",)) -> list[VolumeSource]:
    """All volumes of an ACDC-layout directory (``raw_dir/training/patientXXX`` or ``raw_dir/patientXXX``)."""
    raw_dir = Path(raw_dir)
    require_dir(raw_dir)
    root = raw_dir / "training" if (raw_dir / "training").is_dir() else raw_dir
    patients = [root / n for n in visible_entries(root) if re.fullmatch(r"patient\d+", n) and (root / n).is_dir()]
    if not patients:
        raise InputError(f"--raw_dir={raw_dir}: no ACDC patientXXX folders found (in {root})")
    return [acdc_source(p, phase) for phase in phases for p in patients]


# ----------------------------------------------------------------------------------------------
# MSD prostate
def find_prostate(raw_dir: str | os.PathLike) -> list[VolumeSource]:
    """All cases of an MSD Task05 directory or of the originals' ``<id>/img.nii.gz`` layout."""
    raw_dir = Path(raw_dir)
    require_dir(raw_dir)
    for root in (raw_dir, raw_dir / "Task05_Prostate"):
        if (root / "imagesTr").is_dir():
            out = []
            for name in visible_entries(root / "imagesTr"):
                m = re.fullmatch(r"prostate_(\d+)\.nii(\.gz)?", name)
                if m:
                    out.append(VolumeSource(
                        id=f"{int(m.group(1)):03d}", layout="prostate_md", image_path=root / "imagesTr" / name,
                        label_path=root / "labelsTr" / name))
            if not out:
                raise InputError(f"{root / 'imagesTr'}: no prostate_NN.nii.gz files found")
            return out
    out = [VolumeSource(id=n, layout="prostate_md", image_path=nifti_path(raw_dir / n, "img"),
                        label_path=nifti_path(raw_dir / n, "mask"))
           for n in visible_entries(raw_dir) if re.fullmatch(r"\d{3}", n) and (raw_dir / n).is_dir()]
    if not out:
        raise InputError(f"--raw_dir={raw_dir}: neither imagesTr/ (MSD) nor <id>/img.nii.gz folders found")
    return out


# ----------------------------------------------------------------------------------------------
# MM-WHS
def find_mmwhs(raw_dir: str | os.PathLike) -> list[VolumeSource]:
    """All MR training volumes of MM-WHS (``mr_train/`` files or ``<id>/img.nii.gz`` folders)."""
    raw_dir = Path(raw_dir)
    require_dir(raw_dir)
    root = raw_dir / "mr_train" if (raw_dir / "mr_train").is_dir() else raw_dir
    out = []
    for name in visible_entries(root):
        m = re.fullmatch(r"mr_train_(\d{4})_image\.nii(\.gz)?", name)
        if m:
            out.append(VolumeSource(
                id=m.group(1), layout="mmwhs", image_path=root / name,
                label_path=nifti_path(root, f"mr_train_{m.group(1)}_label"), label_encoding="mmwhs"))
    if not out:
        out = [VolumeSource(id=n, layout="mmwhs", image_path=nifti_path(raw_dir / n, "img"),
                            label_path=nifti_path(raw_dir / n, "seg"))
               for n in visible_entries(raw_dir) if re.fullmatch(r"\d{4}", n) and (raw_dir / n).is_dir()]
    if not out:
        raise InputError(f"--raw_dir={raw_dir}: neither mr_train_10NN_image.nii.gz files nor <id>/img.nii.gz "
                         "folders found")
    return out


def remap_mmwhs(vol: NiftiVolume) -> np.ndarray:
    """Map MM-WHS label values 0,205,420,500,550,600,820,850 to 0..7 (int16); others -> InputError."""
    data = np.asarray(vol.data)
    values = np.unique(data)
    unknown = [v for v in values.tolist() if v not in MMWHS_LABEL_MAP]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8])
        raise InputError(f"{vol.path}: label values {shown} are not MM-WHS labels "
                         f"({', '.join(str(k) for k in MMWHS_LABEL_MAP)})")
    out = np.zeros(data.shape, np.int16)
    for value, cls in MMWHS_LABEL_MAP.items():
        out[data == value] = cls
    return out


# ----------------------------------------------------------------------------------------------
def find_volumes(layout: str, raw_dir: str | os.PathLike, phases: Sequence[str] = ("ED",)) -> list[VolumeSource]:
    """List the volumes of a raw dataset directory, sorted by id.

    Args:
        layout: ``acdc``, ``prostate_md`` or ``mmwhs`` (``DatasetConfig.raw_layout``).
        raw_dir: the dataset directory.
        phases: ACDC phases to include (``ED`` ids ``"XXX"``, ``ES`` ids ``"XXX_ES"``).

    Raises:
        InputError: unknown layout or phase, missing directory, no volumes, bad Info.cfg.
    """
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise InputError(f"--phases={','.join(phases)}: expected ED, ES or ED,ES")
    if layout == "acdc":
        sources = find_acdc(raw_dir, phases)
    elif layout == "prostate_md":
        sources = find_prostate(raw_dir)
    elif layout == "mmwhs":
        sources = find_mmwhs(raw_dir)
    else:
        raise InputError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return sorted(sources, key=lambda s: s.id)


def read_volume(source: VolumeSource, num_classes: int) -> RawVolume:
    """Load and validate one volume.

    Args:
        source: from :func:`find_volumes` (or built by hand).
        num_classes: labels must lie in ``0..num_classes-1`` (after the MM-WHS remap).

    Returns:
        The :class:`RawVolume`; the prostate image is channel 0 (T2) of a 4-D file.

    Raises:
        InputError: any missing/corrupt file, wrong dimensions, NaN/Inf voxels, shape mismatch,
            out-of-range labels.
    """
    ndims = (3, 4) if source.layout in ("prostate_md", "custom") else (3,)
    img = load_nifti(source.image_path, ndims=ndims, what="image")
    image = np.asarray(img.data, dtype=np.float32)
    if source.layout == "custom":
        image = select_channel(image, source.channel, source.image_path)
    elif image.ndim == 4:
        image = image[..., 0]  # T2 channel (MSD channel 0); ADC dropped as in the originals
    label = label_affine = label_header = None
    if source.label_path is not None:
        lab = load_nifti(source.label_path, ndims=(3,), what="label")
        check_same_grid(img, lab, image.shape)
        if source.layout == "custom":
            check_same_affine(img, lab)
        if source.label_encoding == "mmwhs":
            label = remap_mmwhs(lab)
        else:
            label = to_label_array(lab, num_classes)
        if int(label.max(initial=0)) > num_classes - 1:
            raise InputError(f"{lab.path}: label values outside 0..{num_classes - 1}")
        label_affine, label_header = lab.affine, lab.header
    return RawVolume(id=source.id, image=image, label=label, spacing=img.spacing, affine=img.affine,
                     header=img.header, label_affine=label_affine, label_header=label_header, source=source)
