"""The only reader and writer of a stage workdir's files and of the weights a model path holds.

Layout of a stage workdir ``W`` (``--workdir``)::

    W/config.json              resolved flags + dataset settings, flat, and the config_history of the
                               reruns that changed them (write_or_check_config, read_config,
                               stage_of, decoder_blocks_of, num_classes_of, run_info)
    W/best/model.weights.h5    UNet with the best validation Dice (save_best)
    W/best/best.json           {"step": int, "val_dice": float} (save_best, read_best)
    W/final/model.weights.h5   UNet at the end of the stage (save_final)
    W/summary.json             what the stage did (write_summary, read_summary)
    W/metrics.json             {"train": [{"step", ...}], "val": [{"step", "val_dice", ...}]} (MetricsLog,
                               read_metrics)
    W/eval_<split>/summary.json  evaluate.py results (read_eval_summary; written by evaluation.report)
    W/ckpt/, W/best_state/     resumable TF checkpoints (training.engine.checkpoint.Checkpointer)

Models: :func:`model_source` says what a workdir, ``.weights.h5`` file, training checkpoint or
SavedModel holds; :func:`load_model` is the one loader (:func:`load_unet` = Keras UNets only).

Cross-stage hand-offs are typed reads with the defaults of the flags that wrote them:
:func:`stage_of`, :func:`decoder_blocks_of` (default 3, ``--no_of_decoder_blocks``),
:func:`num_classes_of`.
"""
from workdir.records import (BEST_DIR, BEST_JSON, CONFIG, DEFAULT_DECODER_BLOCKS, HISTORY_KEY, METRICS, SUMMARY,
                             MetricsLog,
                             RunInfo, config_path, decoder_blocks_of, find_workdir, has_config,
                             metrics_path, num_classes_of, read_best, read_config, read_eval_summary,
                             read_metrics, read_summary, run_info, stage_of,
                             write_or_check_config, write_summary)
from workdir.datasets import model_dataset_config, recorded_dataset_config
from workdir.saved_model import METADATA_PATH, is_saved_model, latest_version, saved_model_metadata
from workdir.weights import (FINAL_DIR, WEIGHTS_NAME, LoadedModel, ModelSource, load_model, load_unet, model_source,
                             restore_checkpoint, save_best, save_final, save_weights_atomic, saved_model_predictor)

__all__ = [
    "BEST_DIR", "BEST_JSON", "CONFIG", "DEFAULT_DECODER_BLOCKS", "FINAL_DIR", "HISTORY_KEY", "METADATA_PATH", "METRICS",
    "SUMMARY", "WEIGHTS_NAME", "LoadedModel", "MetricsLog", "ModelSource", "RunInfo", "config_path",
    "decoder_blocks_of", "find_workdir", "has_config", "is_saved_model", "latest_version",
    "load_model", "load_unet", "metrics_path", "model_dataset_config", "model_source", "num_classes_of", "read_best", "read_config",
    "read_eval_summary", "read_metrics", "read_summary", "recorded_dataset_config", "restore_checkpoint", "run_info",
    "save_best", "save_final", "save_weights_atomic", "saved_model_metadata", "saved_model_predictor",
    "stage_of", "write_or_check_config", "write_summary",
]
