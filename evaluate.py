"""Evaluate a trained UNet at native resolution on the validation or test volumes of a split.

For every volume: predict the preprocessed slices in chunks of 20 (inference-mode BN), map the
probabilities back to the native grid (undo crop/pad, linear resize, argmax; ORIGINAL_SPEC §6.1),
then compute per structure Dice, HD95 and ASSD in mm (header spacing) and HD95 in voxels. Writes
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

from data.errors import InputError, run_main

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


def main(argv: list[str]) -> None:
    """Resolve flags into plain arguments and run :func:`evaluation.evaluator.run_evaluation`."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    model_path = FLAGS.model or FLAGS.workdir
    if not model_path:
        raise InputError("give --workdir or --model")
    if FLAGS.workdir and not os.path.isdir(FLAGS.workdir):
        raise InputError(f"--workdir={FLAGS.workdir}: directory not found")
    if not os.path.exists(model_path) and not os.path.isfile(model_path + ".index"):
        raise InputError(f"--model={model_path}: no such file or directory")
    from evaluation.inference import (config_value, find_workdir, is_saved_model, load_model_and_dataset,
                                      workdir_config)

    if FLAGS.export_dir and is_saved_model(model_path):  # refuse before a long evaluation
        raise InputError(f"--export_dir: --model={model_path} is already a SavedModel")
    import keras

    import configs
    from evaluation.evaluator import run_evaluation
    from evaluation.export import data_n4_settings, export_saved_model, metadata_for

    config = workdir_config(FLAGS.workdir or model_path)
    model, dataset = load_model_and_dataset(model_path, FLAGS.dataset or config_value(config, "dataset"))
    if dataset is None:
        raise InputError("--dataset: unknown for this model (no workdir config.json); pass --dataset")
    cfg = configs.get_config(str(dataset))
    data_dir = FLAGS.data_dir or config_value(config, "data_dir")
    if not data_dir:
        raise InputError("--data_dir: not given and not recorded in the workdir config.json")
    no_tr = FLAGS.no_of_tr_imgs or config_value(config, "no_of_tr_imgs") or "tr1"
    comb = FLAGS.comb_tr_imgs or config_value(config, "comb_tr_imgs") or "c1"
    split = configs.get_split(cfg.name, str(no_tr), str(comb))
    ids = list(FLAGS.ids) if FLAGS.ids else list(split.val if FLAGS.split == "val" else split.test)
    found = find_workdir(model_path)
    workdir = FLAGS.workdir or (str(found) if found is not None else None)
    out_dir = FLAGS.out_dir or (os.path.join(workdir, f"eval_{FLAGS.split}") if workdir else None)
    if out_dir is None:
        raise InputError("--out_dir: required when --model is not inside a stage workdir")
    print(f"evaluating {model_path} on {len(ids)} {FLAGS.split} volumes of {cfg.name} "
          f"({no_tr}/{comb}) from {data_dir} -> {out_dir}", flush=True)
    extra = {"dataset": cfg.name, "split": FLAGS.split, "no_of_tr_imgs": str(no_tr), "comb_tr_imgs": str(comb),
             "model": os.path.abspath(model_path), "data_dir": os.path.abspath(data_dir),
             "protocol": "native grid (undo crop/pad, linear resize of probabilities, argmax); Dice per class "
                         "over the 3-D volume; NaN (absent from GT and prediction) excluded; surface distances "
                         "with header spacing, inf when one mask is empty, means over finite values"}
    run_evaluation(model, data_dir, ids, cfg, out_dir, num_plot_volumes=FLAGS.num_plot_volumes,
                   workdir=workdir, extra=extra, write_predictions=FLAGS.write_predictions)
    print(f"wrote {os.path.join(out_dir, 'summary.json')}, per_volume.csv, predictions/, plots/")
    if FLAGS.export_dir:
        if not isinstance(model, keras.Model):
            raise InputError("--export_dir: the model is already a SavedModel")
        metadata = metadata_for(cfg)
        metadata.update(data_n4_settings(data_dir))
        path = export_saved_model(model, FLAGS.export_dir, metadata)
        print(f"exported SavedModel to {path}")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(run_main(main))
