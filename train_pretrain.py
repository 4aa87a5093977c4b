"""Contrastive pre-training of the encoder (global, G^R/G^D-/G^D) and decoder (local, L^R/L^D).

    python train_pretrain.py --stage global --dataset acdc --data_dir P --workdir W_gcl
    python train_pretrain.py --stage local  --dataset acdc --data_dir P --workdir W_lcl --init_from W_gcl
    python train_selftrain.py --stage baseline --dataset acdc --data_dir P --workdir W_ft \
        --init_from W_lcl --no_of_tr_imgs tr1 --n_iter 10001          # fine-tuning

Defaults are the originals' README settings (G^D, 4 partitions, tau 0.1, batch 12, 10001
iterations; L^R with l=3, 3x3 regions, 13 regions, 5 negatives, wgt_en=1). See README.md (Training).
"""
from __future__ import annotations

from absl import app, flags

from common.cli import run_main
from training import flags as stage_flags

stage_flags.define_flags("pretrain")
main = stage_flags.stage_main("pretrain")


if __name__ == "__main__":
    flags.mark_flags_as_required(list(stage_flags.REQUIRED))
    app.run(run_main(main))
