"""Segment NIfTI volumes with a trained model (workdir, .weights.h5 or SavedModel).

The input gets the training preprocessing of the dataset config (normalization, in-plane
resampling, crop/pad; N4 if the training data used it), the network predicts every slice, and the
probabilities are mapped back to the input grid. The output is an int16 label volume with the
input's affine and header.

A model trained on a custom dataset (``--dataset custom``) carries its dataset config (workdir
``config.json`` or SavedModel metadata), including the channel of multi-channel images it was trained
on (the default ``--channel``). A folder of nnU-Net channel files (``<case>_0000.nii.gz``, e.g. an
``imagesTs/``) is segmented case by case from that channel's files, written as ``<case>.nii.gz``.

Examples:
    python predict.py --model runs/joint --input patient001_frame01.nii.gz --output seg.nii.gz
    python predict.py --model exported/plc --dataset acdc --input scans/ --output segs/
    python predict.py --model runs/plc --input Task05_Prostate/imagesTs --output segs/
"""
from __future__ import annotations

from absl import app, flags

from common.errors import InputError
from common.cli import run_main
from models.precision import define_precision_flag

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Workdir, .weights.h5 file, training checkpoint (W/ckpt), or SavedModel "
                    "(version or base folder).")
flags.DEFINE_string("input", None, "A .nii/.nii.gz file or a folder of them.")
flags.DEFINE_string("output", None, "Output file (for a file input) or folder (for a folder input).")
flags.DEFINE_string("dataset", None, "Dataset config for the preprocessing (default: recorded with the model).")
flags.DEFINE_string("data_dir", None, "custom datasets: preprocessed data directory whose dataset.json to use "
                    "(default: the config recorded with the model).")
flags.DEFINE_enum("n4", "auto", ["auto", "true", "false"],
                  "N4 bias correction before normalization; auto = as the model's training data "
                  "(always with the shrink factor its preprocessing used).")
flags.DEFINE_integer("channel", None, "Channel of a 4-D input to segment (e.g. 0 = T2 for MSD prostate); "
                     "default: the channel a custom-dataset model was trained on.")

define_precision_flag()
flags.declare_key_flag("precision")  # listed with this script's flags in --help


def main(argv: list[str]) -> None:
    """Segment every input file and report where the outputs went."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("model", "input", "output"):
        if not getattr(FLAGS, name):
            raise InputError(f"--{name} is required")
    from evaluation.segment import predict_paths

    predict_paths(FLAGS.model, FLAGS.input, FLAGS.output, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
                  channel=FLAGS.channel, n4=FLAGS.n4, precision=FLAGS.precision,
                  log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    app.run(run_main(main))
