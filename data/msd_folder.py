"""Reader of Medical Segmentation Decathlon / nnU-Net folders (``--dataset custom``).

A folder ``R`` holds ``dataset.json``, ``imagesTr/``, ``labelsTr/`` and optionally ``imagesTs/``
and ``imagesUnlabeled/``. Two ``dataset.json`` styles are read:

- MSD (and nnU-Net v1): ``labels`` as ``{"0": "background", "1": "name", ...}``, ``modality`` as
  ``{"0": "T2", ...}``, ``training`` as a list of ``{"image": ..., "label": ...}``, optional
  ``test``, ``numTraining``. Images are single 3-D or 4-D files (``imagesTr/<case>.nii.gz``) or,
  as nnU-Net v1 converted them, one 3-D file per channel (``imagesTr/<case>_0000.nii.gz``).
- nnU-Net v2: ``labels`` as ``{"background": 0, "name": 1, ...}``, ``channel_names``,
  ``file_ending`` (``.nii.gz`` or ``.nii``), ``numTraining``; images are always one file per
  channel, ``imagesTr/<case>_<XXXX><file_ending>``.

A case is labeled when ``labelsTr/<case><ending>`` exists; images of ``imagesTr`` without a label
and every image of ``imagesUnlabeled/`` are unlabeled volumes. ``imagesTs/`` images are not
preprocessed (``predict.py`` segments them). Labels must be exactly the values ``0..C-1``
(region-based nnU-Net labels are refused). Volume ids are the case names.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np

from common.errors import InputError
from common.jsonfile import read_json
from data.readers import VolumeSource

ENDINGS = (".nii.gz", ".nii")
_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class FolderDataset:
    """What an MSD / nnU-Net folder holds.

    Attributes:
        root: the folder.
        style: ``"msd"`` or ``"nnunet_v2"`` (style of its ``dataset.json``).
        label_names: C names, entry c = name of label value c (0 = background).
        channel_names: names of the image channels (empty when ``dataset.json`` gives none).
        channel: the channel used (``--channel``; None for single-channel data).
        channel_files: True for the nnU-Net ``_XXXX`` one-file-per-channel layout.
        sources: labeled and unlabeled volumes, sorted by id.
        test_images: ``imagesTs`` files of the used channel, sorted.
    """

    root: Path
    style: str
    label_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    channel: int | None
    channel_files: bool
    sources: tuple[VolumeSource, ...]
    test_images: tuple[Path, ...]

    @property
    def labeled_ids(self) -> list[str]:
        return [s.id for s in self.sources if s.label_path is not None]


def _stem(name: str) -> str | None:
    for ending in ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the visible NIfTI files of ``folder`` (empty if it does not exist)."""
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for name in sorted(os.listdir(folder)):
        stem = _stem(name)
        if stem is None or name.startswith("."):
            continue
        if stem in out:
            raise InputError(f"{folder}: both {out[stem].name} and {name} exist; keep one")
        out[stem] = folder / name
    return out


def read_dataset_json(root: Path) -> dict[str, Any]:
    """``R/dataset.json`` as a dict (one-line ``InputError`` if missing or malformed)."""
    return read_json(root / "dataset.json", "not found; an MSD / nnU-Net folder needs a dataset.json "
                     "(labels, modality or channel_names)")


def parse_labels(info: Mapping[str, Any], path: Path) -> tuple[str, tuple[str, ...]]:
    """Style and label names of a ``dataset.json`` (see module docstring).

    Returns:
        ``(style, names)`` with ``names[c]`` the name of label value c, c = 0..C-1.

    Raises:
        InputError: missing ``labels``, region labels, values that are not exactly 0..C-1, C < 2.
    """
    labels = info.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{path}: 'labels' must be a non-empty object, e.g. {{\"0\": \"background\", "
                         f"\"1\": \"tumour\"}} (MSD) or {{\"background\": 0, \"tumour\": 1}} (nnU-Net v2)")
    v2 = "channel_names" in info or "file_ending" in info or all(
        not isinstance(v, str) for v in labels.values())
    by_value: dict[int, str] = {}
    for key, value in labels.items():
        if v2:
            if isinstance(value, list):
                raise InputError(f"{path}: label {key!r} is a region {value} (nnU-Net region-based "
                                 "training); only one value per label is supported")
            name, raw = key, value
        else:
            name, raw = value, key
        try:
            number = int(str(raw))
        except ValueError:
            raise InputError(f"{path}: label value {raw!r} of {name!r} is not an integer") from None
        if number in by_value:
            raise InputError(f"{path}: label value {number} is given twice")
        by_value[number] = str(name)
    values = sorted(by_value)
    if values != list(range(len(values))):
        raise InputError(f"{path}: label values must be 0..C-1 with 0 = background, got {values}")
    if len(values) < 2:
        raise InputError(f"{path}: 'labels' defines only the background; need at least one structure")
    return ("nnunet_v2" if v2 else "msd"), tuple(by_value[v] for v in values)


def parse_channels(info: Mapping[str, Any], path: Path, channel: int | None) -> tuple[str, ...]:
    """Channel names (``channel_names`` / ``modality``) and a check of ``--channel`` against them."""
    raw = info.get("channel_names", info.get("modality"))
    if raw is None:
        names: tuple[str, ...] = ()
    elif not isinstance(raw, Mapping):
        raise InputError(f"{path}: 'channel_names' / 'modality' must be an object like {{\"0\": \"CT\"}}")
    else:
        try:
            keys = sorted(int(k) for k in raw)
        except ValueError:
            raise InputError(f"{path}: channel keys must be 0, 1, ...: {list(raw)}") from None
        if keys != list(range(len(keys))):
            raise InputError(f"{path}: channel keys must be 0..K-1, got {keys}")
        names = tuple(str(raw[str(k)] if str(k) in raw else raw[k]) for k in keys)
    if channel is not None and channel < 0:
        raise InputError(f"--channel={channel}: must be >= 0")
    if names and channel is not None and channel >= len(names):
        raise InputError(f"--channel={channel}: {path} lists {len(names)} channel(s) "
                         f"({', '.join(f'{i} {n}' for i, n in enumerate(names))})")
    if len(names) > 1 and channel is None:
        raise InputError(f"{path}: lists {len(names)} channels ({', '.join(f'{i} {n}' for i, n in enumerate(names))});"
                         " choose the one to segment with --channel")
    return names


def _uses_channel_files(info: Mapping[str, Any], style: str, images: dict[str, Path],
                        labels: dict[str, Path]) -> bool:
    """nnU-Net ``_XXXX`` one-file-per-channel layout? (v2: always; MSD: detected from the files)."""
    if style == "nnunet_v2":
        return True
    matches = [_SUFFIX.match(s) for s in images]
    if not images or not all(matches):
        return False
    cases = {m.group("case") for m in matches if m}
    return bool(cases & set(labels)) or not labels or not (set(images) & set(labels))


def _group(images: dict[str, Path], channel_files: bool, channel: int | None,
           folder: Path) -> dict[str, Path]:
    """``{case: image file of the used channel}`` of one image folder."""
    if not channel_files:
        return dict(images)
    cases: dict[str, dict[int, Path]] = {}
    for stem, path in images.items():
        m = _SUFFIX.match(stem)
        if m is None:
            raise InputError(f"{path}: expected nnU-Net channel files named <case>_XXXX (e.g. case_0000.nii.gz)")
        cases.setdefault(m.group("case"), {})[int(m.group("channel"))] = path
    out = {}
    for case, files in cases.items():
        if sorted(files) != list(range(len(files))):
            raise InputError(f"{folder}: case {case!r} has channel files {sorted(files)}, expected 0..K-1")
        if len(files) > 1 and channel is None:
            raise InputError(f"{files[1]}: case {case!r} has {len(files)} channels; choose one with --channel")
        wanted = 0 if channel is None else channel
        if wanted not in files:
            raise InputError(f"{folder}: case {case!r} has no channel {wanted} file ({case}_{wanted:04d})")
        out[case] = files[wanted]
    return out


def _check_id(case: str, path: Path) -> None:
    if not _SAFE_ID.match(case) or case == "dataset.json":
        raise InputError(f"{path}: case name {case!r} cannot be a volume id (use letters, digits, . _ -)")


def _check_training_list(info: Mapping[str, Any], path: Path, root: Path, labeled: dict[str, Path]) -> None:
    """The MSD ``training`` list and ``numTraining`` must agree with ``labelsTr``."""
    training = info.get("training")
    if training is not None:
        if not isinstance(training, list):
            raise InputError(f"{path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}}")
        for entry in training:
            if not isinstance(entry, Mapping) or "label" not in entry:
                raise InputError(f"{path}: 'training' entry {entry!r} lacks 'label'")
            label = root / str(entry["label"])
            if not label.is_file():
                raise InputError(f"{path}: 'training' lists {entry['label']} but {label} does not exist")
    number = info.get("numTraining")
    if number is not None and int(number) != len(labeled):
        raise InputError(f"{path}: numTraining is {number} but labelsTr/ holds {len(labeled)} labels "
                         "with an image")


def read_folder(raw_dir: str | os.PathLike, channel: int | None = None) -> FolderDataset:
    """List the volumes of an MSD / nnU-Net folder (see module docstring).

    Args:
        raw_dir: the folder ``R``.
        channel: ``--channel``: which channel of multi-channel images to use.

    Raises:
        InputError: missing or malformed ``dataset.json``, missing ``imagesTr``, a label without an
            image, incomplete channel files, several channels without ``channel``, ids that clash.
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise InputError(f"--raw_dir={raw_dir}: directory not found")
    info = read_dataset_json(root)
    path = root / "dataset.json"
    style, label_names = parse_labels(info, path)
    channel_names = parse_channels(info, path, channel)
    ending = info.get("file_ending", ".nii.gz")
    if ending not in ENDINGS:
        raise InputError(f"{path}: file_ending {ending!r} is not supported; only NIfTI (.nii.gz, .nii)")
    if not (root / "imagesTr").is_dir():
        raise InputError(f"{root / 'imagesTr'}: not found (an MSD / nnU-Net folder has imagesTr/ and labelsTr/)")
    images = _nifti_files(root / "imagesTr")
    labels = _nifti_files(root / "labelsTr")
    channel_files = _uses_channel_files(info, style, images, labels)
    train_cases = _group(images, channel_files, channel, root / "imagesTr")
    orphans = sorted(set(labels) - set(train_cases))
    if orphans:
        raise InputError(f"{labels[orphans[0]]}: label without an image in {root / 'imagesTr'}")
    labeled = {c: labels[c] for c in train_cases if c in labels}
    if not labeled:
        raise InputError(f"{root / 'labelsTr'}: no label file matches an image of imagesTr/ "
                         "(labelsTr/<case>.nii.gz for imagesTr/<case>"
                         f"{'_0000' if channel_files else ''}.nii.gz)")
    _check_training_list(info, path, root, labeled)
    extra = _group(_nifti_files(root / "imagesUnlabeled"), channel_files, channel, root / "imagesUnlabeled")
    clash = sorted(set(extra) & set(train_cases))
    if clash:
        raise InputError(f"{extra[clash[0]]}: case {clash[0]!r} is also in imagesTr/")
    sources = []
    for case, image in sorted({**train_cases, **extra}.items()):
        _check_id(case, image)
        sources.append(VolumeSource(id=case, layout="custom", image_path=image, label_path=labeled.get(case),
                                    channel=None if channel_files else channel,
                                    info={"channel": channel, "channel_file": channel_files}))
    tests = _group(_nifti_files(root / "imagesTs"), channel_files, channel, root / "imagesTs")
    return FolderDataset(root=root, style=style, label_names=label_names, channel_names=channel_names,
                         channel=channel, channel_files=channel_files, sources=tuple(sources),
                         test_images=tuple(tests[c] for c in sorted(tests)))


def image_geometry(path: Path) -> tuple[tuple[int, int], tuple[float, float]]:
    """In-plane shape ``(H0, W0)`` and spacing ``(x, y)`` in mm from a NIfTI header (data not read)."""
    try:
        img = nib.load(str(path))
        zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
        shape = tuple(int(s) for s in img.shape[:2])
    except Exception as exc:  # noqa: BLE001  (any reader failure becomes one line naming the file)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read image as NIfTI ({first})") from None
    if len(shape) < 2 or len(zooms) < 2 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InputError(f"{path}: invalid in-plane shape {shape} or voxel spacing {zooms} in the header")
    return shape, zooms  # type: ignore[return-value]
