"""Pre-registered multi-seed study: baseline vs PLC (release) vs PLC+ (``plc_plus``), choice from validation only.

PROTOCOL (fixed before any run; README "PLC study"; changing it means a new study):

1. Arms: ``baseline``, ``plc`` (the release's method) and ``plc_plus`` (the port's variant), one
   ``run_pipeline`` per seed (one baseline shared by the two joint arms), seeds ``--seeds``
   (default 0..4), budget ``--preset`` (``demo``: the synthetic demo; the reduced real-ACDC protocol
   passes ``--baseline_iters 300 --joint_rounds 2 --joint_iters_per_round 150 --val_every 25``).
2. Inside a run each stage keeps its own best-validation checkpoint (the method's rule); nothing else
   is chosen per run.
3. Validation: every model is evaluated on the split's validation volumes (``evaluate.py --split
   val``). Its noise is measured, not assumed: the bootstrap standard deviation of the mean over
   volumes (``BOOTSTRAP`` resamples of the volumes with replacement) is printed beside every number.
4. The choice, from validation only: an arm is recommended over the baseline iff the 95% t-interval
   of its paired validation difference (arm - baseline, one pair per seed) lies above 0. The choice and
   every validation number are written to ``OUT/choice.json`` **before any test volume is evaluated**.
5. Test: only then is every model evaluated on the test volumes; reported are mean ± std over seeds of
   the test Dice and the paired difference arm - baseline with its 95% t-interval, beside the
   recorded choice. Goal of issue 17: ``plc_plus`` >= baseline + 0.05 with the interval above 0.

Usage:
    python scripts/plc_study.py --dataset synthetic --data_dir demo_out/preprocessed --out_dir runs/study_demo
    python scripts/plc_study.py --dataset custom --data_dir acdc64 --out_dir runs/study_acdc64 \
        --baseline_iters 300 --joint_rounds 2 --joint_iters_per_round 150 --val_every 25

Reruns reuse finished stages; a finished ``choice.json`` is never rewritten (a study is decided once).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from common.errors import InputError  # noqa: E402
from training import pipeline  # noqa: E402

ARMS = ("baseline", "plc", "plc_plus")
BOOTSTRAP = 1000
CHOICE = "choice.json"


def per_volume_dice(eval_dir: Path) -> np.ndarray:
    """Mean foreground Dice of each volume (``per_volume.csv`` column ``dice_mean``), NaN-free."""
    with open(eval_dir / "per_volume.csv", newline="") as f:
        values = [float(r["dice_mean"]) for r in csv.DictReader(f) if r.get("dice_mean") not in (None, "", "nan")]
    return np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)


def bootstrap_std(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> float:
    """Standard deviation of the mean over volumes under resampling of the volumes (the noise of one
    validation score of one model)."""
    if values.size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, values.size), replace=True).mean(axis=1)
    return float(means.std(ddof=1))


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences and its two-sided t-interval (n - 1 degrees of freedom)."""
    from scipy import stats

    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=np.float64)
    if d.size < 2:
        return {"n": int(d.size), "mean": float(d.mean()) if d.size else None, "low": None, "high": None}
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"n": int(d.size), "mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half)}


def choose(validation: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Step 4 of the protocol: per arm, the paired validation difference and whether it is chosen."""
    out = {}
    for arm in ARMS[1:]:
        iv = paired_interval([v[arm] - v["baseline"] for v in validation.values()])
        out[arm] = {**iv, "recommended": bool(iv["low"] is not None and iv["low"] > 0)}
    return out


def study(opts_for_seed: Any, seeds: Sequence[int], out_dir: Path) -> dict[str, Any]:
    """Run the protocol; ``opts_for_seed(seed)`` gives the seed's :class:`training.pipeline.PipelineOptions`."""
    runs = {s: opts_for_seed(s) for s in seeds}
    workdirs: dict[int, dict[str, Path]] = {}
    validation: dict[int, dict[str, float]] = {}
    val_noise: dict[int, dict[str, float]] = {}
    for seed, opts in runs.items():
        workdirs[seed] = pipeline.train_methods(opts)
        pipeline.evaluate_methods(opts, workdirs[seed], split="val", export=False)
        validation[seed], val_noise[seed] = {}, {}
        for arm, wd in workdirs[seed].items():
            vols = per_volume_dice(wd / "eval_val")
            validation[seed][arm] = float(vols.mean()) if vols.size else float("nan")
            val_noise[seed][arm] = bootstrap_std(vols)
    choice_path = out_dir / CHOICE
    if choice_path.exists():
        recorded = json.loads(choice_path.read_text())
        if recorded.get("seeds") != list(seeds):
            raise InputError(f"{choice_path}: records seeds {recorded.get('seeds')}, not {list(seeds)}: a study is "
                             "decided once; use another --out_dir")
        choice = recorded
    else:
        choice = {"protocol": "scripts/plc_study.py PROTOCOL", "seeds": list(seeds), "validation": validation,
                  "validation_bootstrap_std": val_noise, "choice": choose(validation)}
        atomic_write_json(choice_path, choice)  # before any test volume is evaluated
    print(format_validation(choice), flush=True)
    test: dict[int, dict[str, float]] = {}
    for seed, opts in runs.items():
        results = pipeline.evaluate_methods(opts, workdirs[seed], split="test", export=False)
        test[seed] = {arm: _mean(r) for arm, r in results.items()}
    report = {"choice": choice["choice"], "validation": choice["validation"], "test": test,
              "test_paired": {arm: paired_interval([t[arm] - t["baseline"] for t in test.values()])
                              for arm in ARMS[1:]},
              "labels": {arm: pipeline.run_label(wd, arm) for arm, wd in next(iter(workdirs.values())).items()}}
    atomic_write_json(out_dir / "study.json", report)
    text = format_report(report)
    atomic_write_text(out_dir / "study.md", text + "\n")
    print(text, flush=True)
    return report


def _mean(summary: dict[str, Any]) -> float:
    value = summary["overall"]["dice"]["mean"]
    return float("nan") if value is None else float(value)


def _iv(iv: dict[str, Any]) -> str:
    if iv["low"] is None:
        return "n/a (fewer than 2 seeds)" if iv["mean"] is None else f"{iv['mean']:+.3f} (1 seed: no interval)"
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def format_validation(choice: dict[str, Any]) -> str:
    lines = ["Validation Dice per seed (± bootstrap std over volumes: the noise of one score)",
             "| seed | " + " | ".join(ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    for seed, vals in choice["validation"].items():
        noise = choice["validation_bootstrap_std"][seed]
        lines.append(f"| {seed} | " + " | ".join(f"{vals[a]:.3f} ± {noise[a]:.3f}" for a in ARMS) + " |")
    for arm, c in choice["choice"].items():
        lines.append(f"choice (validation only): {arm} - baseline = {_iv(c)} (95% t-interval) -> "
                     f"{'recommended' if c['recommended'] else 'not recommended'}")
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    lines = ["Test Dice per seed (recorded after the choice)",
             "| seed | " + " | ".join(report["labels"][a] for a in ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    for seed, vals in report["test"].items():
        lines.append(f"| {seed} | " + " | ".join(f"{vals[a]:.3f}" for a in ARMS) + " |")
    for arm in ARMS:
        v = np.asarray([t[arm] for t in report["test"].values()], dtype=np.float64)
        lines.append(f"{report['labels'][arm]}: {np.nanmean(v):.3f} ± {np.nanstd(v):.3f} over {v.size} seeds")
    for arm, iv in report["test_paired"].items():
        lines.append(f"test {arm} - baseline = {_iv(iv)} (95% t-interval); validation choice: "
                     f"{'recommended' if report['choice'][arm]['recommended'] else 'not recommended'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--no_of_tr_imgs", default="tr1")
    p.add_argument("--comb_tr_imgs", default="c1")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--preset", default="demo", choices=sorted(pipeline.PRESETS))
    for key in pipeline.PRESETS["demo"]:
        p.add_argument(f"--{key}", type=int, default=None, help=f"override the preset's {key}")
    p.add_argument("--in_process", action="store_true", help="run every stage in this process")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds: integers expected, got {args.seeds}")
    out = Path(args.out_dir).resolve()
    overrides = {k: getattr(args, k) for k in pipeline.PRESETS["demo"]}

    def opts_for_seed(seed: int) -> pipeline.PipelineOptions:
        return pipeline.make_options(args.preset, overrides, dataset=args.dataset,
                                     data_dir=str(Path(args.data_dir).resolve()), out_dir=str(out / f"s{seed}"),
                                     no_of_tr_imgs=args.no_of_tr_imgs, comb_tr_imgs=args.comb_tr_imgs,
                                     methods=ARMS, seed=seed, in_process=args.in_process)
    out.mkdir(parents=True, exist_ok=True)
    return study(opts_for_seed, seeds, out)


if __name__ == "__main__":
    try:
        main()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
