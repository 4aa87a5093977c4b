"""Flags of the stage scripts, each defined once, and their conversion into a typed config.

Names are the originals' (ORIGINAL_SPEC §7). A flag shared by the two scripts has one definition
and one meaning here; only its default may differ per script (e.g. ``--bt_size``, the contrastive
batch: 12 images per partition group in global pre-training, 10 image pairs in the joint stage).
Only the scripts (and tests, through :func:`parse_config`) call this module; library code takes the
resulting :class:`training.config.StageConfig`.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from absl import app, flags, logging

import configs
from models import precision as prec
from training import registry
from configs.base import REFERENCE_SPLIT_KEY
from training.config import StageConfig, config_from
from workdir.records import DEFAULT_DECODER_BLOCKS

# name -> (kind, help). Kinds: "int", "float", "bool", "str", ("enum", choices).
SPECS: dict[str, tuple[Any, str]] = {
    "stage": (("enum", ("global", "local", "baseline", "pseudolabel", "joint")), "which stage to run"),
    "dataset": (("enum", tuple(configs.DATASETS)), "dataset configuration"),
    "data_dir": ("str", "preprocessed data directory (python -m data.preprocess)"),
    "workdir": ("str", "directory for everything this stage writes"),
    "init_from": ("str", "workdir of the previous stage to initialize from"),
    "n_iter": ("int", "number of iterations"),
    "max_steps": ("int", "cap on the iterations (smoke runs; 0 = no cap)"),
    "seed": ("int", "seed of the data sampling and augmentation"),
    "jit_compile": (("enum", ("auto", "true", "false")), "XLA for the training step (auto: on for GPU, off for CPU)"),
    "num_replicas": ("int", "logical CPU replicas (test distribution without GPUs)"),
    "precision": (("enum", prec.PRECISIONS), prec.HELP),
    "val_every": ("int", "validate every this many iterations (val_step_update)"),
    "ckpt_every": ("int", "save a resumable checkpoint every this many iterations"),
    "log_every": ("int", "write training scalars every this many iterations"),
    "override_config": ("bool", "resume a --workdir whose config.json records other training settings "
                                "(refused otherwise; lengths, periods and paths may change anyway); the "
                                "changes are added to its config_history"),
    "ver": ("int", "version tag (--ver 1 in the joint stage: stop-gradient prototypes)"),
    "no_of_tr_imgs": ("str", "volume set: the labeled set (tr1, tr2, tr8, trall, ...); pre-training "
                             "default: the dataset's unlabeled pool (tr52 ACDC / tr22 prostate / tr10 MMWHS)"),
    "comb_tr_imgs": ("str", "combination of --no_of_tr_imgs (c1..c5)"),
    # contrastive losses
    "temp_fac": ("float", "temperature tau of the contrastive loss"),
    "bt_size": ("int", "contrastive batch size: global pre-training B images per partition group (4B "
                       "for G^D); joint stage: image pairs (the pairing table needs 10); the local "
                       "pre-training batch is 10 pairs as in the release (bug 9.2.6)"),
    "local_loss_exp_no": ("int", "local contrastive loss variant: pre-training 0 L^R (random slices) / "
                                 "1 L^D (partitions); joint stage 0 intra-image / 1 inter-image prototypes"),
    "bbox_dim": ("int", "crop height of the global-loss augmentation (the joint stage accepts it, as "
                        "the original, and does not use it)"),
    # pre-training
    "lr_reg": ("float", "learning rate of the contrastive pre-training"),
    "global_loss_exp_no": ("int", "0 G^R, 1 G^D-, 2 G^D"),
    "n_parts": ("int", "partitions per volume S"),
    "replicate_gd_zero_block": ("bool", "reproduce the all-zero last block of the G^D batch (bug 9.2.1)"),
    "no_of_decoder_blocks": ("int", "decoder blocks l pre-trained (README: 3)"),
    "local_reg_size": ("int", "1: 3x3 regions, 0: single pixels"),
    "no_of_local_regions": ("int", "9 or 13 positive regions"),
    "no_of_neg_local_regions": ("int", "negative regions per positive (L^R)"),
    "wgt_en": ("int", "1: shared Dense-128 projection of 3x3 region vectors"),
    # supervised
    "lr_seg": ("float", "learning rate of the segmentation training"),
    "dsc_loss": ("int", "0 weighted CE, 1 Dice without background, 2 Dice with background"),
    "data_aug": ("int", "1: affine augmentation (+ deformation with --rd_en)"),
    "rd_en": ("int", "random deformations"),
    "ri_en": ("int", "random intensity on deformed images (the originals' intent; their release never "
                     "applied it, bug 9.1.3)"),
    "sigma": ("float", "std of the 3x3 deformation grid, pixels"),
    "batch_size": ("int", "labeled slices per step (mtask_bs)"),
    # pseudo-labels
    "crf": ("bool", "refine pseudo-labels with the dense CRF, as the originals (--nocrf: the plc_plus variant)"),
    "test_aug_overlap": ("int", "1: keep only volumes whose two TTA predictions agree"),
    "test_f1_threshold": ("float", "agreement threshold of the TTA filter"),
    "crf_workers": ("int", "CRF processes (0 = all cores)"),
    # joint
    "rounds": ("int", "self-training rounds (pseudo-labels re-estimated between rounds)"),
    "n_iter_per_round": ("int", "iterations per round (the release ran 301, bug 9.3.2)"),
    "lamda_local": ("float", "weight of the pseudo-label local contrastive loss"),
    "no_of_pos_eles": ("int", "anchor pixels per class and image"),
    "no_of_neg_eles": ("int", "accepted as in the original; unused by the original loss"),
    "replicate_plc_loss_weighting": ("bool", "reproduce the released per-pair weighting 1/D^(B-k) (bug 9.3.1)"),
    "plc_global_best": ("bool", "keep the global best across rounds (the release resets the running best "
                                "to the last validation Dice at each round end, 9.3.6)"),
    "plc_warm_start": ("bool", "variant plc_plus: round 0 continues the --init_from model: segmentation head, "
                               "BN moving statistics and Adam moments too, all from its best_state/ checkpoint "
                               "(default, the release: encoder/decoder trainable weights only, fresh head, "
                               "statistics and Adam)"),
    "plc_round_floor": ("bool", "variant plc_plus: validate the model each round starts from and never keep a "
                                "model whose validation Dice is below it (default, the release: keep the round's "
                                "best even then)"),
    "pseudo_label_dir": ("str", "round-0 pseudo-labels (from --stage pseudolabel); default: generate them "
                                "from --init_from"),
}

COMMON_DEFAULTS: dict[str, Any] = {
    "dataset": "acdc", "data_dir": None, "workdir": None, "init_from": None, "max_steps": 0, "seed": 0,
    "jit_compile": "auto", "num_replicas": 1, "precision": prec.DEFAULT_PRECISION, "val_every": 50,
    "ckpt_every": 100, "log_every": 10, "ver": 0, "comb_tr_imgs": "c1", "override_config": False,
}

# Per-script flag defaults (the originals' README settings).
SCRIPT_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {
        **COMMON_DEFAULTS, "stage": None, "n_iter": 10001, "no_of_tr_imgs": None, "lr_reg": 1e-3,
        "temp_fac": 0.1, "bt_size": 12, "global_loss_exp_no": 2, "n_parts": 4, "bbox_dim": 100,
        "replicate_gd_zero_block": False, "local_loss_exp_no": 0, "no_of_decoder_blocks": DEFAULT_DECODER_BLOCKS,
        "local_reg_size": 1, "no_of_local_regions": 13, "no_of_neg_local_regions": 5, "wgt_en": 1,
    },
    "selftrain": {
        # The labeled set: tr2, as the originals' README; run_pipeline.py's is tr1 (PIPELINE_DEFAULTS).
        **COMMON_DEFAULTS, "stage": None, "n_iter": 5001, "no_of_tr_imgs": "tr2", "lr_seg": 1e-3,
        "dsc_loss": 2, "data_aug": 1, "rd_en": 1, "ri_en": 0, "sigma": 5.0, "batch_size": 20, "crf": True,
        "test_aug_overlap": 0, "test_f1_threshold": 0.9, "crf_workers": 0, "rounds": 3,
        "n_iter_per_round": 5000, "lamda_local": 0.1, "temp_fac": 0.1, "no_of_pos_eles": 3,
        "no_of_neg_eles": 3, "bt_size": 10, "local_loss_exp_no": 1, "replicate_plc_loss_weighting": False,
        "plc_global_best": False, "plc_warm_start": False, "plc_round_floor": False, "pseudo_label_dir": None, "bbox_dim": 150,
    },
}
REQUIRED = ("stage", "data_dir", "workdir")
# run_pipeline.py's own flags (the iteration settings are its PRESETS, training.pipeline). The labeled
# set is tr1/c1 (configs.base.REFERENCE_SPLIT_KEY, the smallest setting of the papers' tables, make
# demo), not the stage script's tr2: a pipeline names its labeled set in its runs folder.
PIPELINE_DEFAULTS: dict[str, Any] = {
    "dataset": "synthetic", "no_of_tr_imgs": REFERENCE_SPLIT_KEY[0], "comb_tr_imgs": REFERENCE_SPLIT_KEY[1],
    "methods": ["baseline", "plc"], "preset": "paper", "seed": 0, "crf": True,
}


def define_flags(script: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define the flags of ``script`` (``pretrain`` or ``selftrain``) in ``flag_values``."""
    for name, default in SCRIPT_DEFAULTS[script].items():
        kind, help_text = SPECS[name]
        if name == "stage":
            flags.DEFINE_enum(name, default, list(registry.FAMILIES[script].stages), help_text, flag_values=flag_values)
        elif isinstance(kind, tuple):
            flags.DEFINE_enum(name, default, list(kind[1]), help_text, flag_values=flag_values)
        else:
            definer = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "bool": flags.DEFINE_bool,
                       "str": flags.DEFINE_string}[kind]
            definer(name, default, help_text, flag_values=flag_values)


def config_from_flags(script: str, flag_values: flags.FlagValues = flags.FLAGS) -> StageConfig:
    """The typed config of ``script`` from parsed ``flag_values``."""
    values = {name: flag_values[name].value for name in SCRIPT_DEFAULTS[script]}
    return config_from(registry.FAMILIES[script].config_class, values)


def parse_config(script: str, argv: list[str]) -> StageConfig:
    """Parse ``argv`` (flags only, no program name) with ``script``'s own flag definitions.

    The same definitions and conversion the script uses, on a private ``FlagValues``; tests and
    the pipeline runner use it to get a script's config without running the script.
    """
    fv = flags.FlagValues()
    define_flags(script, fv)
    fv(["prog", *argv])
    return config_from_flags(script, fv)


def script_of(stage: str) -> str:
    """``pretrain`` or ``selftrain``: the script family a stage belongs to (``training.registry``)."""
    return registry.family_of(stage).name


def default_config(stage: str, **overrides: Any) -> StageConfig:
    """The config of ``stage`` with the script's flag defaults and ``overrides`` (tests, tools)."""
    script = script_of(stage)
    values = dict(SCRIPT_DEFAULTS[script], stage=stage)
    unknown = [k for k in overrides if k not in values]
    if unknown:
        raise TypeError(f"{script} has no flags {unknown}")
    values.update(overrides)
    return config_from(registry.FAMILIES[script].config_class, values)


def stage_function(stage: str) -> Callable[[StageConfig], dict[str, Any]]:
    """The library function that runs ``stage`` (``training.registry.run_function``)."""
    return registry.run_function(stage)


def run_and_report(conf: StageConfig) -> dict[str, Any]:
    """Run a stage and print its summary line; a diverged run exits with status 3."""
    from training.engine.loop import TrainingDiverged

    try:
        summary = stage_function(conf.stage)(conf)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    print(f"[{conf.stage}] done: " + ", ".join(f"{k}={v}" for k, v in summary.items()
                                               if not isinstance(v, (dict, list))), flush=True)
    return summary


def stage_main(script: str) -> Callable[[list[str]], None]:
    """The absl ``main`` of a stage script: flags -> typed config, devices, then the stage."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)
        conf = config_from_flags(script)
        from training.engine.strategy import configure_devices

        configure_devices(conf.num_replicas)
        run_and_report(conf)

    return main
