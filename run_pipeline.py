"""Run the stages of one dataset and label setting in sequence (see training/pipeline.py).

    python run_pipeline.py --dataset synthetic --data_dir demo_out/preprocessed --out_dir demo_out/runs \
        --preset demo --methods baseline,plc
"""
from __future__ import annotations

import os

from absl import app, flags

import configs
from common.cli import run_main
from common.errors import InputError
from training import pipeline
from training.flags import PIPELINE_DEFAULTS as DEFAULTS

OVERRIDABLE = list(pipeline.PRESETS["paper"])

flags.DEFINE_enum("dataset", DEFAULTS["dataset"], list(configs.DATASETS), "dataset configuration")
flags.DEFINE_string("data_dir", None, "preprocessed data directory")
flags.DEFINE_string("out_dir", None, "root of the stage workdirs and results")
flags.DEFINE_string("no_of_tr_imgs", DEFAULTS["no_of_tr_imgs"], "labeled set")
flags.DEFINE_string("comb_tr_imgs", DEFAULTS["comb_tr_imgs"], "labeled combination")
flags.DEFINE_list("methods", DEFAULTS["methods"], f"methods to run, any of {','.join(pipeline.METHODS)} "
                  "(README 'Reproducing the papers'; plc_plus is the port's variant)")
flags.DEFINE_enum("preset", DEFAULTS["preset"], list(pipeline.PRESETS), "iteration settings")
for _key in OVERRIDABLE:
    flags.DEFINE_integer(_key, None, f"override the preset's {_key}")
flags.DEFINE_integer("seed", DEFAULTS["seed"], "seed of every stage")
flags.DEFINE_bool("crf", DEFAULTS["crf"], "dense-CRF refinement of the release methods' pseudo-labels (the release: on; "
                  "plc_plus never uses it)")
flags.DEFINE_string("export_dir", None, "export a model as a SavedModel here: PLC (release) if it ran, else the "
                    "first of plc_plus, plc_intra, plc_gcl_lcl, selftrain_gcl_lcl, gcl_lcl, baseline")
flags.DEFINE_multi_string("extra", [], "extra flag passed to every training stage whose script defines it, "
                          "e.g. --extra=--jit_compile=true")
flags.DEFINE_bool("dry_run", False, "print the stage commands, what each would do and the iteration totals; "
                  "run nothing (no TensorFlow start)")
flags.DEFINE_bool("allow_missing", False, "evaluate the test volumes the data dir holds when some are absent "
                  "(e.g. patient 090 of the originals' cropped ACDC copy); the absent ids go to summary.json")
flags.DEFINE_bool("in_process", False, "run every stage in this process (one TensorFlow start; faster on "
                  "CPUs, used by make demo) instead of one subprocess per stage")
FLAGS = flags.FLAGS


def options_from_flags(fv: flags.FlagValues = FLAGS) -> pipeline.PipelineOptions:
    """The parsed flags as the pipeline's typed options."""
    if not fv.data_dir or not fv.out_dir:
        raise InputError("--data_dir and --out_dir are required")
    overrides = {k: fv[k].value for k in OVERRIDABLE}
    overrides["crf"] = fv.crf
    return pipeline.make_options(
        fv.preset, overrides, dataset=fv.dataset, data_dir=os.path.abspath(fv.data_dir),
        out_dir=os.path.abspath(fv.out_dir), no_of_tr_imgs=fv.no_of_tr_imgs, comb_tr_imgs=fv.comb_tr_imgs,
        methods=fv.methods, seed=fv.seed, export_dir=fv.export_dir and os.path.abspath(fv.export_dir),
        extra=fv.extra, in_process=fv.in_process, allow_missing=fv.allow_missing)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {argv[1:]}")
    options = options_from_flags()
    if FLAGS.preset == "demo" and not FLAGS.dry_run:
        from bench.matmul import matmul_peak_gflops

        print(pipeline.demo_estimate(matmul_peak_gflops(repeats=3)["gflops"])[1], flush=True)
    pipeline.run_pipeline(options, dry_run=FLAGS.dry_run)


if __name__ == "__main__":
    app.run(run_main(main))
