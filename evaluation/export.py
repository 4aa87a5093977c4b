"""Export a trained UNet as a TensorFlow SavedModel for TF Serving.

Layout (TF Serving convention): ``<export_dir>/<version>/`` with ``saved_model.pb``, ``variables/``
and ``assets.extra/plc_metadata.json`` (dataset, classes, structure names, training resolution),
where ``<version>`` is the next free positive integer (1 for a new directory).

Signature ``serving_default`` (float32 in and out at every ``--precision``; the metadata records the
``precision`` the network computes in): input ``images`` float32 ``(N, H, W, 1)`` — slices preprocessed as in
training (min-max normalized with the volume's 1st/99th percentiles, resampled to the dataset's
in-plane resolution; H and W multiples of 32) — outputs ``probabilities`` float32 ``(N, H, W, C)``
(softmax) and ``labels`` int32 ``(N, H, W)`` (argmax). Batch normalization runs in inference mode.

Signature ``segment_volume`` (exported whenever the dataset's image size and target resolution are
known): inputs ``image`` float32 ``(D, H0, W0)`` raw intensities of one volume and ``spacing``
float32 ``(2,)`` pixel size in mm along H0 and W0; outputs ``labels`` int32 ``(D, H0, W0)`` and
``probabilities`` float32 ``(D, H0, W0, C)`` on the input grid. It runs predict.py's whole pipeline
in the graph (``evaluation.volume_graph``), except N4 bias correction.

The archive is written with ``keras.export.ExportArchive``; a ``tf.Module`` saved with
``tf.saved_model.save`` loses the BN moving statistics in the session loader TF Serving uses
(DESIGN.md), which ``saved_model_cli run`` catches.

Usage:
    python -m evaluation.export --model runs/joint --export_dir exported/plc [--precision mixed_bfloat16]
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import atomic_dir, atomic_write_json
from common.errors import InputError
from models.precision import define_precision_flag
from workdir import METADATA_PATH, load_model, model_dataset_config, run_info

if TYPE_CHECKING:
    import keras

# keras / tensorflow are imported inside the functions that need them, so that scripts can check
# their arguments (is this a SavedModel? which version?) and fail fast without loading TensorFlow.

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
VOLUME_SIGNATURE_NAME = "segment_volume"


def next_version(export_dir: str | os.PathLike) -> int:
    """1 + the largest numeric sub-folder of ``export_dir`` (1 when there is none)."""
    export_dir = Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise InputError(f"--export_dir: {export_dir} exists and is not a directory")
    versions = [int(p.name) for p in export_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)] \
        if export_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, export_dir: str | os.PathLike,
                       metadata: dict[str, Any] | None = None, version: int | None = None) -> Path:
    """Write ``model`` as a SavedModel under ``export_dir/<version>``.

    Args:
        model: a UNet ``(N, H, W, 1) -> (N, H, W, C)`` logits.
        export_dir: the model base path TF Serving watches.
        metadata: JSON-able facts stored in ``assets.extra/plc_metadata.json`` (dataset, ...). Its
            ``image_size`` and ``target_resolution`` (else those of the config named by ``dataset``)
            define the ``segment_volume`` signature; without them only ``serving_default`` is
            written (``signatures`` in the metadata lists what was exported).
        version: version number; default the next free one.

    Returns:
        The version folder.
    """
    import keras
    import tensorflow as tf

    from models.unet import DOWNSAMPLING

    version = next_version(export_dir) if version is None else int(version)
    target = Path(export_dir) / str(version)
    if target.exists():
        raise InputError(f"--export_dir: version folder {target} already exists")

    @tf.function
    def serve(images):
        # images: (N, H, W, 1) float32
        shape = tf.shape(images)
        checks = [tf.debugging.assert_equal(shape[1] % DOWNSAMPLING, 0,
                                            message=f"image height must be a multiple of {DOWNSAMPLING}"),
                  tf.debugging.assert_equal(shape[2] % DOWNSAMPLING, 0,
                                            message=f"image width must be a multiple of {DOWNSAMPLING}")]
        with tf.control_dependencies(checks):
            logits = model(images, training=False)  # (N, H, W, C)
        probabilities = tf.nn.softmax(logits, axis=-1)  # (N, H, W, C)
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N, H, W)
        return {"probabilities": probabilities, "labels": labels}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_NAME, fn=serve,
        input_signature=[tf.TensorSpec(shape=(None, None, None, 1), dtype=tf.float32, name=INPUT_NAME)])
    from models.precision import precision_of

    meta = {"num_classes": int(model.output.shape[-1]), "input": INPUT_NAME,
            "outputs": ["probabilities", "labels"], "downsampling": DOWNSAMPLING,
            "precision": precision_of(model)}  # inside; the signature is float32 in and out
    meta.update(metadata or {})
    geometry = volume_geometry(meta)
    signatures = [SIGNATURE_NAME]
    if geometry is not None:
        from evaluation.volume_graph import INPUT_SIGNATURE, make_segment_volume

        archive.add_endpoint(name=VOLUME_SIGNATURE_NAME, fn=make_segment_volume(model, *geometry),
                             input_signature=list(INPUT_SIGNATURE))
        signatures.append(VOLUME_SIGNATURE_NAME)
        meta[VOLUME_SIGNATURE_NAME] = {
            "inputs": {"image": "float32 (D, H0, W0) raw intensities",
                       "spacing": "float32 (2,) pixel size in mm along H0, W0"},
            "outputs": {"labels": "int32 (D, H0, W0)", "probabilities": "float32 (D, H0, W0, C)"},
            "n4": False}
    meta["signatures"] = signatures
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)  # TF logs every captured variable name at INFO
    try:
        with atomic_dir(target) as tmp:
            archive.write_out(str(tmp), verbose=False)
            atomic_write_json(tmp / METADATA_PATH, meta)
    finally:
        absl_logging.set_verbosity(verbosity)
    return target


def volume_geometry(meta: dict[str, Any]) -> tuple[tuple[int, int], tuple[float, float]] | None:
    """``(image_size, target_resolution)`` for ``segment_volume`` from export metadata, else from the
    config of ``meta["dataset"]``; None when neither is known."""
    size, res = meta.get("image_size"), meta.get("target_resolution")
    if (size is None or res is None) and meta.get("dataset"):
        from configs import get_config

        cfg = get_config(str(meta["dataset"]))
        size, res = cfg.image_size, cfg.target_resolution
    if size is None or res is None:
        return None
    size = (int(size[0]), int(size[1]))
    if size[0] % 32 or size[1] % 32:
        raise InputError(f"image_size {size}: must be multiples of 32 for the UNet")
    return size, (float(res[0]), float(res[1]))


def metadata_for(config_or_dataset: Any) -> dict[str, Any]:
    """Metadata of a ``configs.DatasetConfig`` (or built-in dataset name) for ``plc_metadata.json``;
    ``dataset_config`` holds the whole config (``predict.py`` reads a custom dataset's from it)."""
    from configs import custom, get_config

    cfg = get_config(config_or_dataset) if isinstance(config_or_dataset, str) else config_or_dataset
    return {"dataset": cfg.name, "image_size": list(cfg.image_size),
            "target_resolution": list(cfg.target_resolution), "struct_names": list(cfg.struct_names),
            "dataset_config": custom.config_to_dict(cfg)}


def data_n4_settings(data_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``{"n4": bool, "n4_shrink": int}`` of a preprocessed data directory (its ``dataset.json``):
    whether it was N4-corrected and with which shrink factor of the fit (no N4 and 1 if unknown).

    ``predict.py`` must run N4 exactly as preprocessing did; both values go into the SavedModel
    metadata.
    """
    path = Path(str(data_dir)) / "dataset.json" if data_dir else None
    meta: Any = {}
    if path is not None and path.is_file():
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            meta = {}
    n4 = bool(meta.get("n4", False)) if isinstance(meta, dict) else False
    return {"n4": n4, "n4_shrink": int(meta.get("n4_shrink") or 1) if n4 else 1}


def define_flags(flag_values: Any = None) -> None:
    """Define the CLI flags (on ``absl.flags.FLAGS`` unless ``flag_values`` is given)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("model", None, "Workdir, checkpoint folder or .weights.h5 file of a trained UNet.",
                        flag_values=fv)
    flags.DEFINE_string("export_dir", None, "Base folder; the SavedModel goes to <export_dir>/<next version>.",
                        flag_values=fv)
    flags.DEFINE_string("dataset", None, "Dataset config (default: from the workdir's config.json).",
                        flag_values=fv)
    define_precision_flag(fv)
    flags.declare_key_flag("precision", flag_values=fv)


def export_model(model_path: str | None, export_dir: str | None, dataset: str | None = None,
                 precision: str | None = None) -> Path:
    """``python -m evaluation.export``: export the UNet at ``model_path`` computing in ``precision``
    (None = fp32; float32 in and out at every precision); returns the version folder."""
    import keras

    if not model_path or not export_dir:
        raise InputError("--model and --export_dir are required")
    model, dataset = load_model(model_path, dataset, precision=precision)
    if not isinstance(model, keras.Model):
        raise InputError(f"--model={model_path}: is already a SavedModel")
    metadata = metadata_for(model_dataset_config(str(dataset), model_path)) if dataset else {}
    metadata.update(data_n4_settings(run_info(model_path).data_dir))
    path = export_saved_model(model, export_dir, metadata)
    print(f"exported SavedModel to {path}: {describe_signatures(path)}")
    return path


def describe_signatures(path: str | os.PathLike) -> str:
    """One line naming the signatures of an export (and why ``segment_volume`` is missing)."""
    meta = json.loads((Path(path) / METADATA_PATH).read_text())
    text = f"'{SIGNATURE_NAME}' ({INPUT_NAME} (N,H,W,1) float32 -> probabilities (N,H,W,C), labels (N,H,W) int32)"
    if VOLUME_SIGNATURE_NAME in meta.get("signatures", []):
        text += (f", '{VOLUME_SIGNATURE_NAME}' (image (D,H0,W0) float32 raw, spacing (2,) mm -> labels "
                 f"(D,H0,W0) int32, probabilities (D,H0,W0,C); no N4)")
        if meta.get("n4"):
            text += "; warning: the training data was N4-corrected, segment_volume does not apply N4"
    else:
        text += f"; '{VOLUME_SIGNATURE_NAME}' not exported: dataset unknown (pass --dataset)"
    return text


if __name__ == "__main__":
    from absl import app, flags

    from common.cli import run_main

    define_flags()

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
        fv = flags.FLAGS
        export_model(fv.model, fv.export_dir, fv.dataset, fv.precision)

    app.run(run_main(main))
