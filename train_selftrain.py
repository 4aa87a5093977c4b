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
from training import flags as stage_flags

stage_flags.define_flags("selftrain")
main = stage_flags.stage_main("selftrain")


if __name__ == "__main__":
    flags.mark_flags_as_required(list(stage_flags.REQUIRED))
    app.run(run_main(main))
