"""Flag definitions shared by the stage scripts (names of the originals kept, ORIGINAL_SPEC §7).

Only the scripts call these functions; they turn the parsed flags into a ``StageConfig`` with
:func:`to_config` so that library code never reads absl FLAGS.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from absl import app, flags, logging

import configs
from training.engine.common import StageConfig


def define_common(default_n_iter: int) -> None:
    """Flags every stage has."""
    flags.DEFINE_enum("dataset", "acdc", list(configs.DATASETS), "dataset configuration")
    flags.DEFINE_string("data_dir", None, "preprocessed data directory (python -m data.preprocess)")
    flags.DEFINE_string("workdir", None, "directory for everything this stage writes")
    flags.DEFINE_string("init_from", None, "workdir of the previous stage to initialize from")
    flags.DEFINE_integer("n_iter", default_n_iter, "number of iterations")
    flags.DEFINE_integer("max_steps", 0, "cap on the iterations (smoke runs; 0 = no cap)")
    flags.DEFINE_integer("seed", 0, "seed of the data sampling and augmentation")
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                      "XLA for the training step (auto: on for GPU, off for CPU)")
    flags.DEFINE_integer("num_replicas", 1, "logical CPU replicas (test distribution without GPUs)")
    flags.DEFINE_integer("val_every", 50, "validate every this many iterations (val_step_update)")
    flags.DEFINE_integer("ckpt_every", 100, "save a resumable checkpoint every this many iterations")
    flags.DEFINE_integer("ver", 0, "version tag (--ver 1 in the joint stage: stop-gradient prototypes)")


def define_split(default_tr: str) -> None:
    flags.DEFINE_string("no_of_tr_imgs", default_tr, "labeled training set (tr1, tr2, tr8, trall, ...)")
    flags.DEFINE_string("comb_tr_imgs", "c1", "combination of the labeled set (c1..c5)")


def define_supervised() -> None:
    """Supervised-loss and augmentation flags (baseline, fine-tuning, joint)."""
    flags.DEFINE_float("lr_seg", 1e-3, "learning rate of the segmentation training")
    flags.DEFINE_integer("dsc_loss", 2, "0 weighted CE, 1 Dice without background, 2 Dice with background")
    flags.DEFINE_integer("data_aug", 1, "1: affine augmentation (+ deformation with --rd_en)")
    flags.DEFINE_integer("rd_en", 1, "random deformations")
    flags.DEFINE_integer("ri_en", 0, "random intensity on deformed images (the originals' intent; "
                         "their release never applied it, bug 9.1.3)")
    flags.DEFINE_float("sigma", 5.0, "std of the 3x3 deformation grid, pixels")
    flags.DEFINE_integer("batch_size", 20, "labeled slices per step (mtask_bs)")


def define_pseudo_label() -> None:
    flags.DEFINE_bool("crf", True, "refine pseudo-labels with the dense CRF")
    flags.DEFINE_integer("test_aug_overlap", 0, "1: keep only volumes whose two TTA predictions agree")
    flags.DEFINE_float("test_f1_threshold", 0.9, "agreement threshold of the TTA filter")
    flags.DEFINE_integer("crf_workers", 0, "CRF processes (0 = all cores)")


def to_config(names: list[str] | None = None, **extra) -> StageConfig:
    """The parsed flags (all, or ``names``) as a StageConfig, plus ``extra``."""
    fl = flags.FLAGS
    if names is None:
        names = sorted({f.name for module, fs in fl.flags_by_module_dict().items()
                        if not module.startswith(("absl", "tensorflow", "keras", "tf_", "tensorboard"))
                        and "site-packages" not in module for f in fs})
    keys = names
    conf = StageConfig({k: fl[k].value for k in keys})
    conf.update(extra)
    return conf


def run_stage(conf: StageConfig, run: Callable[[StageConfig], dict[str, Any]]) -> None:
    """Run a stage function and print its summary; a diverged run exits with status 3."""
    from training.engine.loop import TrainingDiverged

    try:
        summary = run(conf)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    print(f"[{conf.stage}] done: " + ", ".join(f"{k}={v}" for k, v in summary.items()
                                               if not isinstance(v, (dict, list))), flush=True)


def stage_main(runner_for: Callable[[str], Callable[[StageConfig], dict[str, Any]]]) -> Callable[[list[str]], None]:
    """The absl ``main`` of a stage script.

    Parses the flags into a StageConfig, configures the (logical) devices before TensorFlow
    initializes them, then imports and runs the stage function ``runner_for(conf.stage)``.
    """

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)
        conf = to_config()
        from training.engine.strategy import configure_devices

        configure_devices(int(conf.num_replicas))
        run_stage(conf, runner_for(conf.stage))

    return main
