"""Segment arbitrary NIfTI volumes with a trained model (library part of ``predict.py``).

Each volume goes through the dataset's training preprocessing (``data.volume_prep.preprocess_volume``:
optional N4, percentile min-max normalization, in-plane resampling to the training resolution,
centre crop/pad), the network (chunks of 20 slices), and the inverse mapping to the input grid
(``data.geometry.labels_to_native``). The output is an int16 label volume with the input's affine
and header.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import nibabel as nib
import numpy as np

from common.atomic import atomic_save_nifti
from common.errors import InputError
from data.nifti_io import load_nifti, select_channel
from evaluation.inference import CHUNK, Predictor, label_image_like, predict_native

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti_name(name: str) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` file names."""
    return name.endswith(NIFTI_SUFFIXES)


def _check_raw_spacing(path: str | os.PathLike) -> None:
    """Refuse a header whose in-plane/slice spacing is zero or not finite.

    nibabel silently replaces zero ``pixdim`` entries by 1 when it loads a file, which would
    resample the volume as if it had 1 mm voxels; the raw header is read unchecked to catch that.
    """
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            header = nib.Nifti1Header.from_fileobj(f, check=False)
    except Exception:  # unreadable files are reported by load_nifti with the full reason
        return
    ndim = int(header["dim"][0])
    pixdim = [float(v) for v in header["pixdim"][1:1 + min(max(ndim, 1), 3)]]
    if not all(np.isfinite(v) and v != 0 for v in pixdim):
        raise InputError(f"{path}: voxel spacing missing or invalid in the header (pixdim {pixdim})")


def read_input_volume(path: str | os.PathLike, channel: int | None = None) -> tuple[np.ndarray, Any]:
    """Load a 3-D NIfTI image (or one channel of a 4-D one) with checks.

    Args:
        path: the file.
        channel: index along the 4th axis for 4-D inputs (e.g. 0 = T2 of MSD prostate); a 4-D file with
            a single channel needs none.

    Returns:
        ``(image (H0, W0, D) float32, nibabel image)``.

    Raises:
        InputError: unreadable file, wrong dimensionality, non-finite voxels, missing/zero spacing.
    """
    _check_raw_spacing(path)
    vol = load_nifti(path, ndims=(3, 4), what="image")
    data = select_channel(np.asarray(vol.data), channel, path)
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path}: image voxel type {data.dtype} is not numeric")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: image contains NaN/Inf voxels")
    return data.astype(np.float32), nib.load(str(path))


def segment_volume(predictor: Predictor, cfg: Any, image: np.ndarray, spacing: tuple[float, ...],
                   n4: bool = False, chunk: int = CHUNK, n4_shrink: int = 1) -> np.ndarray:
    """Labels ``(H0, W0, D)`` int16 of a raw image ``(H0, W0, D)`` with voxel size ``spacing`` (mm).

    ``n4`` / ``n4_shrink``: N4 correction as the training data's preprocessing did it (its
    ``dataset.json``); another shrink factor gives another bias field, so other network inputs.
    """
    from data.volume_prep import preprocess_volume

    pre, _, meta = preprocess_volume(image, spacing, cfg, n4=n4, n4_shrink=n4_shrink)  # (D, H, W)
    labels, _ = predict_native(predictor, pre, meta, chunk)  # (H0, W0, D)
    return labels


def segment_file(predictor: Predictor, cfg: Any, in_path: str | os.PathLike, out_path: str | os.PathLike,
                 n4: bool = False, channel: int | None = None, chunk: int = CHUNK, n4_shrink: int = 1) -> np.ndarray:
    """Segment one NIfTI file and write the labels with the input's affine and header
    (``n4`` / ``n4_shrink`` as :func:`segment_volume`).

    Returns:
        The label volume ``(H0, W0, D)`` int16.
    """
    image, img = read_input_volume(in_path, channel)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InputError(f"{in_path}: voxel spacing missing or invalid in the header {zooms}")
    try:
        labels = segment_volume(predictor, cfg, image, zooms, n4=n4, chunk=chunk, n4_shrink=n4_shrink)
    except InputError as exc:  # e.g. a constant image: name the file (a folder may hold many)
        raise InputError(str(exc) if str(in_path) in str(exc) else f"{in_path}: {exc}") from None
    atomic_save_nifti(label_image_like(labels, img), out_path)
    return labels


class Job(NamedTuple):
    """One file to segment: input, output and the channel to read (None: the file is one channel)."""

    src: Path
    dst: Path
    channel: int | None


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii(\.gz)?)$")


def _channel_file_jobs(files: list[Path], dst: Path, channel: int | None) -> list[Job] | None:
    """Jobs for a folder of nnU-Net channel files ``<case>_XXXX.nii.gz`` (None if it is not one):
    the files of ``channel`` (0 when the folder has one channel), written as ``<case>.nii.gz``."""
    matches = [_CHANNEL_FILE.match(f.name) for f in files]
    if not all(matches):
        return None
    channels = sorted({int(m.group("channel")) for m in matches if m})
    if channel is None and len(channels) > 1:
        raise InputError(f"--input={files[0].parent}: nnU-Net channel files of channels {channels}; "
                         "choose one with --channel")
    wanted = 0 if channel is None else channel
    jobs = [Job(f, dst / f"{m.group('case')}{m.group('ending')}", None)
            for f, m in zip(files, matches) if m and int(m.group("channel")) == wanted]
    if not jobs:
        raise InputError(f"--input={files[0].parent}: no files of channel {wanted} (<case>_{wanted:04d}.nii.gz)")
    return jobs


def plan_outputs(input_path: str | os.PathLike, output_path: str | os.PathLike,
                 channel: int | None = None) -> list[Job]:
    """Jobs ``(input file, output file, channel)``: a file -> a file, or a folder -> a folder (same
    names; a folder of nnU-Net channel files -> the files of ``channel``, named ``<case>.nii.gz``).

    Raises:
        InputError: missing input, folder without NIfTI files, a file output for a folder input, an
            output that would overwrite an input.
    """
    src, dst = Path(input_path), Path(output_path)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and is_nifti_name(p.name))
        if not files:
            raise InputError(f"--input={src}: folder contains no .nii/.nii.gz files")
        if dst.exists() and not dst.is_dir():
            raise InputError(f"--output={dst}: must be a folder when --input is a folder")
        if dst.resolve() == src.resolve():
            raise InputError(f"--output={dst}: same folder as --input; inputs are never overwritten")
        return _channel_file_jobs(files, dst, channel) or [Job(f, dst / f.name, channel) for f in files]
    if not src.exists():
        raise InputError(f"--input={src}: no such file or folder")
    if not is_nifti_name(src.name):
        raise InputError(f"--input={src}: expected a .nii or .nii.gz file")
    if dst.is_dir():
        dst = dst / src.name
    if not is_nifti_name(dst.name):
        raise InputError(f"--output={dst}: expected a .nii or .nii.gz file name")
    if dst.resolve() == src.resolve():
        raise InputError(f"--output={dst}: same file as --input; inputs are never overwritten")
    return [Job(src, dst, channel)]


def _is_4d(path: Path) -> bool:
    try:
        return len(nib.load(str(path)).shape) == 4
    except Exception:  # noqa: BLE001  (unreadable files are reported by read_input_volume)
        return False


def training_n4(model_path: str | os.PathLike) -> tuple[bool, int]:
    """Whether the model's training data was N4-corrected, and the shrink factor of that N4 fit
    (workdir config data_dir or SavedModel metadata; exports without a shrink factor used 1)."""
    from evaluation.export import data_n4_settings
    from workdir import is_saved_model, run_info, saved_model_metadata

    if is_saved_model(model_path):
        meta = saved_model_metadata(model_path)
        return bool(meta.get("n4", False)), int(meta.get("n4_shrink") or 1)
    settings = data_n4_settings(run_info(model_path).data_dir)
    return settings["n4"], settings["n4_shrink"]


def predict_paths(model_path: str | os.PathLike, input_path: str | os.PathLike, output_path: str | os.PathLike,
                  dataset: str | None = None, data_dir: str | os.PathLike | None = None,
                  channel: int | None = None, n4: str = "auto",
                  log: Callable[[str], None] | None = None, precision: str | None = None) -> list[Job]:
    """``predict.py``: segment a file or a folder with a trained model.

    Args:
        model_path: workdir, ``.weights.h5``, training checkpoint or SavedModel.
        input_path, output_path: file -> file or folder -> folder (see :func:`plan_outputs`).
        dataset: dataset name (default: recorded with the model).
        data_dir: ``custom`` datasets: the data dir whose ``dataset.json`` to use (default: the
            config recorded with the model).
        channel: channel of 4-D inputs / of nnU-Net channel-file folders; default: the channel
            a custom-dataset model was trained on (``DatasetConfig.input_channel``), applied to 4-D
            inputs and channel-file folders only.
        n4: ``auto`` (as the training data), ``true`` or ``false``; N4 always uses the shrink factor
            the training data's preprocessing recorded (1 if none).
        log: called with one line per segmented file.
        precision: the network's ``--precision`` (None = fp32; see :func:`workdir.load_model`).

    Returns:
        The jobs done.
    """
    from evaluation.inference import as_predictor
    from workdir import load_model, model_dataset_config

    model, name = load_model(model_path, dataset, data_dir=data_dir, precision=precision)
    if name is None:
        raise InputError("--dataset: unknown for this model (no config.json or metadata); pass --dataset")
    cfg = model_dataset_config(str(name), model_path, data_dir)
    explicit = channel is not None
    jobs = plan_outputs(input_path, output_path, channel=channel if explicit else cfg.input_channel)
    training, n4_shrink = training_n4(model_path)
    use_n4 = training if n4 == "auto" else n4 == "true"
    predictor = as_predictor(model)
    for job in jobs:
        t0 = time.time()
        file_channel = job.channel if explicit or _is_4d(job.src) else None
        labels = segment_file(predictor, cfg, job.src, job.dst, n4=use_n4, channel=file_channel,
                              n4_shrink=n4_shrink)
        if log is not None:
            counts = ", ".join(f"{s} {int((labels == c).sum())}" for c, s in enumerate(cfg.struct_names, start=1))
            log(f"{job.src} -> {job.dst}: shape {labels.shape}, voxels per structure: {counts} "
                f"({time.time() - t0:.1f} s)")
    return jobs
