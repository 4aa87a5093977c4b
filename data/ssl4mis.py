"""Reader of ACDC in the SSL4MIS h5 layout (``--layout ssl4mis_h5``).

Layout (as SSL4MIS and the papers built on it distribute ``data/ACDC``)::

    R/train.list, R/val.list, R/test.list      one ``patientXXX_frameYY`` per line
    R/train_slices.list                        one ``patientXXX_frameYY_slice_N`` per line
    R/data/patientXXX_frameYY.h5               volume: ``image`` (Z, H, W) float in [0, 1], ``label`` uint8
    R/data/[slices/]patientXXX_frameYY_slice_N.h5   2-D slice: ``image`` (H, W), ``label`` (H, W)

Some copies ship volumes only for the validation and test patients and the training patients as
slices only; a volume is read from its h5 file when there is one, else stacked from its slices in
the order of N (consecutive, from 0 or 1). No voxel spacing is stored anywhere.

Ids follow the papers' convention: each patient has two annotated frames; the lower frame number is
end-diastole (id ``"XXX"``), the higher end-systole (``"XXX_ES"``). Arrays are transposed from the
h5 ``(Z, H, W)`` order (SimpleITK's) to ``(W, H, Z)``, the axis order nibabel gives for the raw ACDC
NIfTI files, so volumes read here have the orientation of the other layouts.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from common.errors import InputError
from data.readers import PHASES, RawVolume, VolumeSource, require_dir, visible_entries
from data.spacing import Spacing

LAYOUT = "ssl4mis_h5"
LIST_NAMES = ("train", "val", "test")
NAME_RE = re.compile(r"patient(\d+)_frame(\d+)")
SLICE_RE = re.compile(r"(patient\d+_frame\d+)_slice_(\d+)\.h5")
VOLUME_RE = re.compile(r"(patient\d+_frame\d+)\.h5")
# SSL4MIS patients_to_slices("ACDC"): the labeled set is the first N slices of train_slices.list.
LABELED_SLICES = {"3": 68, "7": 136}


@dataclass(frozen=True)
class H5Source:
    """Where one SSL4MIS volume lives.

    Attributes:
        id: ``"XXX"`` (ED) or ``"XXX_ES"``.
        name: ``patientXXX_frameYY``.
        frame: frame number YY.
        phase: ``ED`` or ``ES``.
        volume_path: the volume h5 file, or ``None`` when it is stacked from slices.
        slice_paths: slice files in slice order (may be empty when ``volume_path`` is set).
    """

    id: str
    name: str
    frame: int
    phase: str
    volume_path: Path | None
    slice_paths: tuple[Path, ...] = field(default=())

    @property
    def where(self) -> str:
        """Short description of the files, for messages and ``meta.json``."""
        if self.volume_path is not None:
            return str(self.volume_path)
        first = self.slice_paths[0]
        return str(first.parent / f"{self.name}_slice_{{{_slice_no(first)}..{_slice_no(self.slice_paths[-1])}}}.h5")


def _slice_no(path: Path) -> int:
    return int(SLICE_RE.fullmatch(path.name).group(2))  # type: ignore[union-attr]


def data_root(raw_dir: str | os.PathLike) -> Path:
    """``raw_dir/data`` when it exists, else ``raw_dir`` itself (a bare folder of h5 files)."""
    raw_dir = Path(raw_dir)
    require_dir(raw_dir)
    return raw_dir / "data" if (raw_dir / "data").is_dir() else raw_dir


def _h5_files(root: Path) -> tuple[dict[str, Path], dict[str, dict[int, Path]]]:
    volumes: dict[str, Path] = {}
    slices: dict[str, dict[int, Path]] = {}
    for folder in (root, root / "slices"):
        if not folder.is_dir():
            continue
        for name in visible_entries(folder):
            if m := SLICE_RE.fullmatch(name):
                slices.setdefault(m.group(1), {})[int(m.group(2))] = folder / name
            elif (m := VOLUME_RE.fullmatch(name)) and folder == root:
                volumes[m.group(1)] = folder / name
    return volumes, slices


def _ordered_slices(name: str, numbered: dict[int, Path]) -> tuple[Path, ...]:
    nums = sorted(numbered)
    start = nums[0]
    if start not in (0, 1) or nums != list(range(start, start + len(nums))):
        missing = sorted(set(range(start if start in (0, 1) else 0, nums[-1] + 1)) - set(nums))
        raise InputError(f"{numbered[nums[0]].parent}: slices of {name} are not numbered consecutively from 0 or 1 "
                         f"(missing slice_{missing[0] if missing else start})")
    return tuple(numbered[n] for n in nums)


def find_h5(raw_dir: str | os.PathLike, phases: Sequence[str] = PHASES) -> list[H5Source]:
    """All volumes of an SSL4MIS ACDC folder, sorted by id.

    Raises:
        InputError: no h5 files, a patient without exactly two frames, slices not numbered
            consecutively, or a volume whose slice files disagree with it in number.
    """
    root = data_root(raw_dir)
    volumes, slices = _h5_files(root)
    names = sorted(set(volumes) | set(slices))
    if not names:
        raise InputError(f"--raw_dir={raw_dir}: no patientXXX_frameYY[_slice_N].h5 files found in {root}")
    frames: dict[str, dict[int, str]] = {}  # patient id -> {frame number: name}
    for name in names:
        pid, frame = NAME_RE.fullmatch(name).groups()  # type: ignore[union-attr]
        frames.setdefault(f"{int(pid):03d}", {})[int(frame)] = name
    out = []
    for pid, by_frame in sorted(frames.items()):
        if len(by_frame) != 2:
            shown = ", ".join(f"{f:02d}" for f in sorted(by_frame))
            raise InputError(f"{root}: patient{pid} has frame(s) {shown}; ED/ES need exactly two annotated frames "
                             "per patient (the lower frame number is ED)")
        for phase, frame in zip(PHASES, sorted(by_frame)):
            if phase not in phases:
                continue
            name = by_frame[frame]
            ordered = _ordered_slices(name, slices[name]) if name in slices else ()
            out.append(H5Source(id=pid if phase == "ED" else f"{pid}_ES", name=name, frame=frame, phase=phase,
                                volume_path=volumes.get(name), slice_paths=ordered))
    return sorted(out, key=lambda s: s.id)


def _read_pair(path: Path, ndim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` float32 and ``label`` int16 of one h5 file, both ``ndim``-D and of one shape."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                found = ", ".join(sorted(f.keys())) or "nothing"
                raise InputError(f"{path}: no {' and no '.join(repr(k) for k in missing)} dataset (found: {found})")
            image, label = f["image"][()], f["label"][()]
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read as HDF5 (truncated or corrupt?): {msg}") from None
    for what, arr in (("image", image), ("label", label)):
        if np.ndim(arr) != ndim or min(np.shape(arr), default=0) < 1:
            raise InputError(f"{path}: {what} has shape {np.shape(arr)}, expected {ndim} non-empty dimensions")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{path}: {what} has non-numeric type {arr.dtype}")
    if image.shape != label.shape:
        raise InputError(f"{path}: label shape {label.shape} differs from image shape {image.shape}")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise InputError(f"{path}: image contains {int(np.size(image) - np.isfinite(image).sum())} NaN/Inf voxels")
    if np.issubdtype(label.dtype, np.floating):
        if not np.array_equal(np.rint(label), label):
            raise InputError(f"{path}: label has non-integer values")
    values = np.unique(label)
    bad = values[(values < 0) | (values > num_classes - 1)]
    if bad.size:
        raise InputError(f"{path}: label values {', '.join(str(int(v)) for v in bad[:8])} outside "
                         f"0..{num_classes - 1}")
    return image, label.astype(np.int16)


def read_h5(source: H5Source, num_classes: int, pixel_spacing: Spacing | None = None) -> RawVolume:
    """Load one volume (from its h5 file or stacked slices) as ``(W, H, Z)`` arrays.

    Args:
        source: from :func:`find_h5`.
        num_classes: labels must lie in ``0..num_classes-1``.
        pixel_spacing: ``--pixel_spacing`` (x, y, z-or-None); ``None``: spacing unknown.

    Raises:
        InputError: unreadable h5, missing ``image``/``label``, wrong dimensions, shapes that differ
            (image vs label, slice vs slice, volume depth vs its slice files), NaN/Inf, labels out of range.
    """
    if source.volume_path is not None:
        image, label = _read_pair(source.volume_path, 3, num_classes)  # (Z, H, W)
        if source.slice_paths and len(source.slice_paths) != image.shape[0]:
            raise InputError(f"{source.volume_path}: {image.shape[0]} slices, but {len(source.slice_paths)} "
                             f"{source.name}_slice_N.h5 files")
    else:
        pairs = [_read_pair(p, 2, num_classes) for p in source.slice_paths]
        for p, (img, _) in zip(source.slice_paths, pairs):
            if img.shape != pairs[0][0].shape:
                raise InputError(f"{p}: slice shape {img.shape} differs from {pairs[0][0].shape} of "
                                 f"{source.slice_paths[0].name}")
        image = np.stack([a for a, _ in pairs])  # (Z, H, W)
        label = np.stack([b for _, b in pairs])
    spacing: Spacing = pixel_spacing if pixel_spacing is not None else (None, None, None)
    affine = np.diag([1.0 if s is None else float(s) for s in spacing] + [1.0])
    vs = VolumeSource(id=source.id, layout=LAYOUT, image_path=source.volume_path or source.slice_paths[0],
                      label_path=source.volume_path or source.slice_paths[0],
                      info={"phase": source.phase, "frame": source.frame, "name": source.name,
                            "from": "volume" if source.volume_path is not None else "slices"})
    origin = "unknown" if pixel_spacing is None else (
        "--pixel_spacing" if spacing[2] is not None else "--pixel_spacing (slice spacing unknown)")
    return RawVolume(id=source.id, image=np.transpose(image, (2, 1, 0)), label=np.transpose(label, (2, 1, 0)),
                     spacing=spacing, affine=affine, header=None, label_affine=affine, label_header=None,
                     source=vs, spacing_source=origin)


# ----------------------------------------------------------------------------------------------- lists
def read_lists(raw_dir: str | os.PathLike) -> dict[str, list[str]] | None:
    """``{"train": [...], "val": [...], "test": [...], "train_slices": [...]}`` from the list files.

    Returns ``None`` when none of the list files exists; a missing one gives an empty list.

    Raises:
        InputError: a line that is not ``patientXXX_frameYY`` (``..._slice_N`` in train_slices.list).
    """
    raw_dir = Path(raw_dir)
    out: dict[str, list[str]] = {}
    for key in LIST_NAMES + ("train_slices",):
        path = raw_dir / f"{key}.list"
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()] if path.is_file() else None
        if lines is None:
            continue
        pattern = re.compile(r"patient\d+_frame\d+" + (r"_slice_\d+" if key == "train_slices" else ""))
        for n, line in enumerate(lines, start=1):
            if line and not pattern.fullmatch(line.removesuffix(".h5")):
                raise InputError(f"{path}: line {n} is not a {pattern.pattern} name: {line[:40]!r}")
        out[key] = [ln.removesuffix(".h5") for ln in lines if ln]
    if not out:
        return None
    return {key: out.get(key, []) for key in LIST_NAMES + ("train_slices",)}


def check_lists(lists: dict[str, list[str]], sources: Sequence[H5Source], raw_dir: str | os.PathLike) -> None:
    """Every volume a list names must exist (as a volume file or as slices)."""
    known = {s.name for s in sources}
    for key in LIST_NAMES:
        missing = [n for n in lists[key] if n not in known]
        if missing:
            raise InputError(f"{Path(raw_dir) / (key + '.list')}: names {missing[0]} but neither "
                             f"data/{missing[0]}.h5 nor its slices exist ({len(missing)} missing)")


def _patients(names: Sequence[str]) -> list[str]:
    """Patient ids ``"XXX"`` in order of first appearance."""
    return list(dict.fromkeys(f"{int(NAME_RE.match(n).group(1)):03d}" for n in names))  # type: ignore[union-attr]


def split_from_lists(lists: dict[str, list[str]]) -> dict[str, list[str]]:
    """Patients of each list and the labeled patients SSL4MIS takes (first 68 / 136 training slices)."""
    out = {f"{key}_patients": sorted(_patients(lists[key])) for key in LIST_NAMES}
    for n, count in LABELED_SLICES.items():
        if len(lists["train_slices"]) >= count:
            out[f"labeled{n}"] = _patients(lists["train_slices"][:count])
    return out


def unchecked_lists(lists: dict[str, list[str]], raw_dir: str | os.PathLike) -> list[str]:
    """One line per part of ``configs.acdc``'s ssl4mis split that :func:`compare_with_config` cannot
    compare the lists with: a missing or empty list file, a ``train_slices.list`` shorter than a
    labeled set's slice count."""
    raw_dir = Path(raw_dir)
    out = [f"{raw_dir / (key + '.list')}: missing or empty; the {key} patients are not compared with "
           f"configs.acdc's ssl4mis split" for key in LIST_NAMES if not lists.get(key)]
    slices = lists.get("train_slices") or []
    for n, count in LABELED_SLICES.items():
        if len(slices) < count:
            out.append(f"{raw_dir / 'train_slices.list'}: {len(slices)} slices, fewer than the {count} of "
                       f"SSL4MIS's {n}-patient labeled set; labeled{n} is not compared with configs.acdc")
    return out


def compare_with_config(found: dict[str, list[str]]) -> list[str]:
    """Differences between the lists' split and ``configs.acdc``'s ssl4mis split (empty = identical)."""
    from configs import acdc

    expected = {"train_patients": sorted(acdc.SSL4MIS_TRAIN_PATIENTS), "val_patients": sorted(acdc.SSL4MIS_VAL_PATIENTS),
                "test_patients": sorted(acdc.SSL4MIS_TEST_PATIENTS), "labeled3": list(acdc.SSL4MIS_LABELED3),
                "labeled7": list(acdc.SSL4MIS_LABELED7)}
    diffs = []
    for key, want in expected.items():
        got = found.get(key)
        if got is None or not got:
            continue
        if (sorted(got) if key.startswith("labeled") else got) != (sorted(want) if key.startswith("labeled") else want):
            extra, lacking = sorted(set(got) - set(want)), sorted(set(want) - set(got))
            diffs.append(f"{key}: lists have {len(got)} patients, configs {len(want)}"
                         + (f"; only in the lists: {','.join(extra[:5])}" if extra else "")
                         + (f"; only in configs: {','.join(lacking[:5])}" if lacking else ""))
    return diffs
