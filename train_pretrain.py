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
from training import flagdefs

flags.DEFINE_enum("stage", None, ["global", "local"], "global (encoder) or local (decoder) pre-training")
flagdefs.define_common(default_n_iter=10001)
flags.DEFINE_string("no_of_tr_imgs", None, "volumes to pre-train on (default: the dataset's unlabeled "
                    "pool, tr52 ACDC / tr22 prostate / tr10 MMWHS)")
flags.DEFINE_string("comb_tr_imgs", "c1", "combination of --no_of_tr_imgs")
flags.DEFINE_float("lr_reg", 1e-3, "learning rate of the contrastive pre-training")
flags.DEFINE_float("temp_fac", 0.1, "temperature tau")
flags.DEFINE_integer("bt_size", 12, "global: batch size B (4B images for G^D); local: ignored, the L^R "
                     "batch is 10 pairs as in the release (bug 9.2.6)")
flags.DEFINE_integer("global_loss_exp_no", 2, "0 G^R, 1 G^D-, 2 G^D")
flags.DEFINE_integer("n_parts", 4, "partitions per volume S")
flags.DEFINE_integer("bbox_dim", 100, "crop height of the global-loss augmentation")
flags.DEFINE_bool("replicate_gd_zero_block", False, "reproduce the all-zero last block of the G^D batch (bug 9.2.1)")
flags.DEFINE_integer("local_loss_exp_no", 0, "0 L^R (random slices), 1 L^D (partition-based)")
flags.DEFINE_integer("no_of_decoder_blocks", 3, "decoder blocks l pre-trained (README: 3)")
flags.DEFINE_integer("local_reg_size", 1, "1: 3x3 regions, 0: single pixels")
flags.DEFINE_integer("no_of_local_regions", 13, "9 or 13 positive regions")
flags.DEFINE_integer("no_of_neg_local_regions", 5, "negative regions per positive (L^R)")
flags.DEFINE_integer("wgt_en", 1, "1: shared Dense-128 projection of 3x3 region vectors")
flags.DEFINE_integer("log_every", 10, "write training scalars every this many iterations")


def _runner(stage: str):
    """The library function of a stage, imported only after the devices are configured."""
    from training.stages.pretrain import run_pretrain

    return run_pretrain


main = flagdefs.stage_main(_runner)


if __name__ == "__main__":
    flags.mark_flags_as_required(["stage", "data_dir", "workdir"])
    app.run(run_main(main))
