"""Supervised baseline / fine-tuning, pseudo-label generation and PLC joint training.

    python train_selftrain.py --stage baseline    --dataset acdc --data_dir P --workdir W_base
    python train_selftrain.py --stage pseudolabel --dataset acdc --data_dir P --workdir W_pl --init_from W_base
    python train_selftrain.py --stage joint       --dataset acdc --data_dir P --workdir W_joint \
        --init_from W_base --pseudo_label_dir W_pl/pseudo_labels/round_0

See README.md (Training) for every flag and the outputs of each stage.
"""
from __future__ import annotations

from absl import app, flags

from common.cli import run_main
from training import flagdefs

flags.DEFINE_enum("stage", None, ["baseline", "pseudolabel", "joint"], "which stage to run")
flagdefs.define_common(default_n_iter=5001)
flagdefs.define_split("tr2")
flagdefs.define_supervised()
flagdefs.define_pseudo_label()
# Joint training (PLC, ORIGINAL_SPEC §3.4, §4.3).
flags.DEFINE_integer("rounds", 3, "self-training rounds (pseudo-labels re-estimated between rounds)")
flags.DEFINE_integer("n_iter_per_round", 5000, "iterations per round (the release ran 301, bug 9.3.2)")
flags.DEFINE_float("lamda_local", 0.1, "weight of the pseudo-label local contrastive loss")
flags.DEFINE_float("temp_fac", 0.1, "temperature tau")
flags.DEFINE_integer("no_of_pos_eles", 3, "anchor pixels per class and image")
flags.DEFINE_integer("no_of_neg_eles", 3, "kept for compatibility: unused by the original loss")
flags.DEFINE_integer("bt_size", 10, "contrastive pairs per step (the pairing table needs 10)")
flags.DEFINE_integer("local_loss_exp_no", 1, "0 intra-image, 1 inter-image prototypes")
flags.DEFINE_bool("replicate_plc_loss_weighting", False,
                  "reproduce the released per-pair weighting 1/D^(B-k) (bug 9.3.1)")
flags.DEFINE_bool("plc_global_best", False,
                  "keep the global best across rounds (the release resets the running best to the "
                  "last validation Dice at each round end, 9.3.6)")
flags.DEFINE_string("pseudo_label_dir", None,
                    "round-0 pseudo-labels (from --stage pseudolabel); default: generate them from --init_from")
flags.DEFINE_float("bbox_dim", 150, "kept for compatibility (directory name only in the original)")


def _runner(stage: str):
    """The library function of a stage, imported only after the devices are configured."""
    if stage == "baseline":
        from training.stages.supervised import run_supervised

        return run_supervised
    if stage == "pseudolabel":
        from training.stages.pseudolabel import run_pseudolabel

        return run_pseudolabel
    from training.stages.joint import run_joint

    return run_joint


main = flagdefs.stage_main(_runner)


if __name__ == "__main__":
    flags.mark_flags_as_required(["stage", "data_dir", "workdir"])
    app.run(run_main(main))
