"""Segment NIfTI volumes with a trained model (workdir, .weights.h5 or SavedModel).

The input gets the training preprocessing of the dataset config (normalization, in-plane
resampling, crop/pad; N4 if the training data used it), the network predicts every slice, and the
probabilities are mapped back to the input grid. The output is an int16 label volume with the
input's affine and header.

Examples:
    python predict.py --model runs/joint --input patient001_frame01.nii.gz --output seg.nii.gz
    python predict.py --model exported/plc --dataset acdc --input scans/ --output segs/
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

from data.errors import InputError, run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Workdir, .weights.h5 file, training checkpoint (W/ckpt), or SavedModel "
                    "(version or base folder).")
flags.DEFINE_string("input", None, "A .nii/.nii.gz file or a folder of them.")
flags.DEFINE_string("output", None, "Output file (for a file input) or folder (for a folder input).")
flags.DEFINE_string("dataset", None, "Dataset config for the preprocessing (default: recorded with the model).")
flags.DEFINE_enum("n4", "auto", ["auto", "true", "false"],
                  "N4 bias correction before normalization; auto = as the model's training data "
                  "(always with the shrink factor its preprocessing used).")
flags.DEFINE_integer("channel", None, "Channel of a 4-D input to segment (e.g. 0 = T2 for MSD prostate).")


def _training_n4(model_path: str) -> tuple[bool, int]:
    """Whether the model's training data was N4-corrected, and the shrink factor of that N4 fit
    (workdir config data_dir or SavedModel metadata; exports without a shrink factor used 1)."""
    from evaluation.export import METADATA_PATH, data_n4_settings, latest_version
    from evaluation.inference import config_value, is_saved_model, workdir_config

    p = Path(model_path)
    if is_saved_model(p):
        version = p if (p / "saved_model.pb").is_file() else latest_version(p)
        meta_path = version / METADATA_PATH
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return bool(meta.get("n4", False)), int(meta.get("n4_shrink") or 1)
    settings = data_n4_settings(config_value(workdir_config(p), "data_dir"))
    return settings["n4"], settings["n4_shrink"]


def main(argv: list[str]) -> None:
    """Segment every input file and report where the outputs went."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("model", "input", "output"):
        if not getattr(FLAGS, name):
            raise InputError(f"--{name} is required")
    import configs
    from evaluation.inference import as_predictor, load_model_and_dataset
    from evaluation.segment import plan_outputs, segment_file

    jobs = plan_outputs(FLAGS.input, FLAGS.output)
    model, dataset = load_model_and_dataset(FLAGS.model, FLAGS.dataset)
    if dataset is None:
        raise InputError("--dataset: unknown for this model (no config.json or metadata); pass --dataset")
    cfg = configs.get_config(str(dataset))
    training_n4, n4_shrink = _training_n4(FLAGS.model)
    n4 = training_n4 if FLAGS.n4 == "auto" else FLAGS.n4 == "true"
    predictor = as_predictor(model)
    for src, dst in jobs:
        t0 = time.time()
        labels = segment_file(predictor, cfg, src, dst, n4=n4, n4_shrink=n4_shrink, channel=FLAGS.channel)
        counts = ", ".join(f"{s} {int((labels == c).sum())}" for c, s in enumerate(cfg.struct_names, start=1))
        print(f"{src} -> {dst}: shape {labels.shape}, voxels per structure: {counts} "
              f"({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    app.run(run_main(main))
