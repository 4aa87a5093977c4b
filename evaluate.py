"""Evaluate a trained UNet at native resolution on the validation or test volumes of a split.

For every volume: predict the preprocessed slices in chunks of 20 (inference-mode BN), map the
probabilities back to the native grid (undo crop/pad, linear resize, argmax; ORIGINAL_SPEC §6.1),
then compute per structure Dice, HD95 and ASSD in mm (header spacing; left out when preprocessing
recorded the spacing as unknown, e.g. SSL4MIS h5 data) and in voxels. Writes
``per_volume.csv``, ``summary.json``, ``predictions/<id>.nii.gz`` (original affine and header) and
plots into ``--out_dir``, prints a table, and optionally exports a SavedModel.

Examples:
    python evaluate.py --workdir runs/joint --data_dir data/acdc_pp --split test
    python evaluate.py --model runs/joint/best/model.weights.h5 --dataset acdc \
        --data_dir data/acdc_pp --split test --out_dir results/joint_c1 --export_dir exported/plc
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from common.errors import InputError
from common.cli import run_main
from models.precision import define_precision_flag

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Stage workdir (uses best/, then final/ weights; config.json for defaults).")
flags.DEFINE_string("model", None, "Model to evaluate: workdir, .weights.h5 file, training checkpoint "
                    "(W/ckpt or a prefix) or SavedModel folder (default: --workdir).")
flags.DEFINE_string("data_dir", None, "Preprocessed data directory (default: data_dir in the workdir config).")
flags.DEFINE_string("dataset", None, "Dataset config (default: from the workdir config or SavedModel metadata).")
flags.DEFINE_enum("split", "test", ["val", "test"], "Which volumes of the split to evaluate.")
flags.DEFINE_string("no_of_tr_imgs", None, "Split size key, e.g. tr1 (default: workdir config, else tr1).")
flags.DEFINE_string("comb_tr_imgs", None, "Split combination, e.g. c1 (default: workdir config, else c1).")
flags.DEFINE_list("ids", None, "Evaluate these volume ids instead of the split's list.")
flags.DEFINE_string("out_dir", None, "Output folder (default: <workdir>/eval_<split>).")
flags.DEFINE_string("export_dir", None, "Also export a SavedModel to <export_dir>/<next version>.")
flags.DEFINE_integer("num_plot_volumes", 3, "Volumes that get an image/GT/prediction overlay figure.")
flags.DEFINE_boolean("write_predictions", True, "Write NIfTI predictions at native resolution.")
define_precision_flag()
flags.declare_key_flag("precision")  # listed with this script's flags in --help
flags.DEFINE_boolean("allow_missing", False, "Evaluate the volumes of the split that the data dir holds when some "
                     "are absent (e.g. patient 090 of a public ACDC copy); the absent ids go to summary.json.")


def main(argv: list[str]) -> None:
    """Resolve flags into plain arguments and run :func:`evaluation.evaluator.evaluate_model`."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    model_path = FLAGS.model or FLAGS.workdir
    if not model_path:
        raise InputError("give --workdir or --model")
    if FLAGS.workdir and not os.path.isdir(FLAGS.workdir):
        raise InputError(f"--workdir={FLAGS.workdir}: directory not found")
    if not os.path.exists(model_path) and not os.path.isfile(model_path + ".index"):
        raise InputError(f"--model={model_path}: no such file or directory")
    from workdir import is_saved_model

    if FLAGS.export_dir and is_saved_model(model_path):  # refuse before a long evaluation
        raise InputError(f"--export_dir: --model={model_path} is already a SavedModel")
    from evaluation.evaluator import evaluate_model

    evaluate_model(model_path, workdir=FLAGS.workdir, data_dir=FLAGS.data_dir, dataset=FLAGS.dataset,
                   split=FLAGS.split, no_of_tr_imgs=FLAGS.no_of_tr_imgs, comb_tr_imgs=FLAGS.comb_tr_imgs,
                   ids=FLAGS.ids, out_dir=FLAGS.out_dir, export_dir=FLAGS.export_dir,
                   num_plot_volumes=FLAGS.num_plot_volumes, write_predictions=FLAGS.write_predictions,
                   allow_missing=FLAGS.allow_missing, precision=FLAGS.precision)
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(run_main(main))
