"""PLC ablation on one preprocessed dataset (README "Real data (ACDC)", issue-8 ablation).

Trains one supervised baseline, makes the round-0 pseudo-labels with and without the dense CRF,
then runs the PLC joint stage under several settings from that same baseline, evaluates every
model on the validation and test volumes, and prints one table. The variants:

* ``release``: the faithful defaults (fresh segmentation head and BN statistics, the round's best
  kept even when below its start, our mean-over-pairs loss weighting);
* ``weighting``: ``--replicate_plc_loss_weighting`` (the release's 1/D^(B-k) pair weighting);
* ``warm``: ``--plc_warm_start``; ``floor``: ``--plc_round_floor``; ``warm_floor``: both;
* ``crf``: round-0 (and later) pseudo-labels refined by the dense CRF.

Selection rule: defaults are chosen on the ``val_dice`` column only (the best validation Dice the
run kept); the ``test_dice`` column is reported, never used for a choice. ``pool_dice_r<k>`` is the
mean foreground Dice of round k's pseudo-labels against the pool's labels (a diagnostic).

Usage:
    python scripts/plc_ablation.py --data_dir P --out_dir runs/ablation --dataset custom \
        [--baseline_iters 300 --rounds 2 --iters_per_round 150 --val_every 25] [--seed 0] [--variants ...]

Finished runs are reused (the stage scripts resume and skip), so the command can be rerun.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "release": [],
    "weighting": ["--replicate_plc_loss_weighting"],
    "crf": [],  # uses the CRF pseudo-labels (below)
    "warm": ["--plc_warm_start"],
    "floor": ["--plc_round_floor"],
    "warm_floor": ["--plc_warm_start", "--plc_round_floor"],
}
FAITHFUL = ["--noplc_warm_start", "--noplc_round_floor", "--noreplicate_plc_loss_weighting"]


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--dataset", default="custom")
    p.add_argument("--no_of_tr_imgs", default="tr1")
    p.add_argument("--comb_tr_imgs", default="c1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline_iters", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iters_per_round", type=int, default=150)
    p.add_argument("--val_every", type=int, default=25)
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {','.join(VARIANTS)}")
    out = Path(a.out_dir).resolve()
    py = sys.executable
    common = [f"--dataset={a.dataset}", f"--data_dir={a.data_dir}", f"--seed={a.seed}",
              f"--no_of_tr_imgs={a.no_of_tr_imgs}", f"--comb_tr_imgs={a.comb_tr_imgs}",
              f"--val_every={a.val_every}", "--ckpt_every=1000"]
    base = out / "baseline"
    _run([py, "train_selftrain.py", "--stage=baseline", f"--workdir={base}", f"--n_iter={a.baseline_iters}",
          *common])
    pl = {}
    for crf in (False, True):
        wd = out / ("pseudolabel_crf" if crf else "pseudolabel")
        _run([py, "train_selftrain.py", "--stage=pseudolabel", f"--workdir={wd}", f"--init_from={base}",
              f"--crf={str(crf).lower()}", *common])
        pl[crf] = wd / "pseudo_labels" / "round_0"
    rows = {"baseline": {"workdir": base}}
    for v in variants:
        crf = v == "crf"
        wd = out / f"plc_{v}"
        _run([py, "train_selftrain.py", "--stage=joint", f"--workdir={wd}", f"--init_from={base}",
              f"--pseudo_label_dir={pl[crf]}", f"--rounds={a.rounds}", f"--n_iter_per_round={a.iters_per_round}",
              f"--crf={str(crf).lower()}", *common, *FAITHFUL, *VARIANTS[v]])
        rows[f"plc_{v}"] = {"workdir": wd}
    for name, row in rows.items():
        wd = row["workdir"]
        if not (wd / "eval_test" / "summary.json").exists():
            _run([py, "evaluate.py", f"--workdir={wd}", "--split=test", "--nowrite_predictions",
                  "--num_plot_volumes=0"])
        summary = _json(wd / "summary.json")
        row["val_dice"] = summary.get("best_val_dice")
        row["test_dice"] = _json(wd / "eval_test" / "summary.json").get("overall", {}).get("dice", {}).get("mean")
        rounds = summary.get("rounds") or []
        for r in rounds:
            m = _json(Path(r["pseudo_labels"]) / "manifest.json").get("mean_dice_vs_label") or {}
            row[f"pool_dice_r{int(r['round'])}"] = m.get("final")
            if "start_val_dice" in r:
                row[f"start_val_r{int(r['round'])}"] = r["start_val_dice"]
    for crf in (False, True):
        m = _json(pl[crf] / "manifest.json").get("mean_dice_vs_label") or {}
        rows["baseline"][f"pool_dice_r0_{'crf' if crf else 'nocrf'}"] = m.get("final")
    table = {k: {c: v for c, v in r.items() if c != "workdir"} for k, r in rows.items()}
    (out / "ablation.json").write_text(json.dumps({"settings": vars(a), "rows": table}, indent=1))
    cols = sorted({c for r in table.values() for c in r})
    print("| run | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k, r in table.items():
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else "" for c in cols]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
