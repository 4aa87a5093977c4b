"""Export a trained UNet as a TensorFlow SavedModel for TF Serving.

Layout (TF Serving convention): ``<export_dir>/<version>/`` with ``saved_model.pb``, ``variables/``
and ``assets.extra/plc_metadata.json`` (dataset, classes, structure names, training resolution),
where ``<version>`` is the next free positive integer (1 for a new directory).

Signature ``serving_default`` (float32 in and out at every ``--precision``; the metadata records the
``precision`` the network computes in): input ``images`` float32 ``(N, H, W, 1)`` — slices preprocessed as in
training (min-max normalized with the volume's 1st/99th percentiles, resampled to the dataset's
in-plane resolution; H and W multiples of 32) — outputs ``probabilities`` float32 ``(N, H, W, C)``
(softmax) and ``labels`` int32 ``(N, H, W)`` (argmax). Batch normalization runs in inference mode.

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
        metadata: JSON-able facts stored in ``assets.extra/plc_metadata.json`` (dataset, ...).
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


def metadata_for(config_or_dataset: Any) -> dict[str, Any]:
    """Metadata of a ``configs.DatasetConfig`` (or built-in dataset name) for ``plc_metadata.json``;
    ``dataset_config`` holds the whole config (``predict.py`` reads a custom dataset's from it)."""
    from configs import custom, get_config

    cfg = get_config(config_or_dataset) if isinstance(config_or_dataset, str) else config_or_dataset
    return {"dataset": cfg.name, "image_size": list(cfg.image_size),
            "target_resolution": list(cfg.target_resolution), "struct_names": list(cfg.struct_names),
            "dataset_config": custom.config_to_dict(cfg)}


def data_n4(data_dir: str | os.PathLike | None) -> bool:
    """Whether a preprocessed data directory was N4-corrected (its ``dataset.json``; False if unknown)."""
    path = Path(str(data_dir)) / "dataset.json" if data_dir else None
    if path is None or not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("n4", False))
    except (OSError, ValueError):
        return False


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


def run_cli(fv: Any) -> Path:
    """Export the model named by parsed flags ``fv``; returns the version folder."""
    import keras

    if not fv.model or not fv.export_dir:
        raise InputError("--model and --export_dir are required")
    model, dataset = load_model(fv.model, fv.dataset, precision=fv.precision)
    if not isinstance(model, keras.Model):
        raise InputError(f"--model={fv.model}: is already a SavedModel")
    metadata = metadata_for(model_dataset_config(str(dataset), fv.model)) if dataset else {}
    metadata["n4"] = data_n4(run_info(fv.model).data_dir)
    path = export_saved_model(model, fv.export_dir, metadata)
    print(f"exported SavedModel to {path} (signature '{SIGNATURE_NAME}': {INPUT_NAME} (N,H,W,1) float32 "
          f"-> probabilities (N,H,W,C), labels (N,H,W) int32)")
    return path


def main(argv: list[str]) -> None:
    """CLI: ``python -m evaluation.export --model M --export_dir DIR [--dataset D]``."""
    from absl import flags

    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    run_cli(flags.FLAGS)


if __name__ == "__main__":
    from absl import app

    from common.cli import run_main

    define_flags()
    app.run(run_main(main))
