"""Tests of evaluation.report, evaluation.aggregate and evaluation.plots (no TensorFlow)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from evaluation import aggregate, plots, report
from evaluation.metrics import VolumeMetrics
from workdir import read_metrics

NAN, INF = float("nan"), float("inf")
STRUCTS = ("RV", "Myo", "LV")


def _vm(dice, hd, assd=None, hdv=None, hd_max=None):
    hd = np.array([NAN] + list(hd))
    hd_max = np.array([NAN] + list(hd_max)) if hd_max else hd * 2
    return VolumeMetrics(dice=np.array([0.99] + list(dice)), hd95_mm=hd,
                         assd_mm=np.array([NAN] + list(assd)) if assd else hd / 2,
                         hd95_vox=np.array([NAN] + list(hdv)) if hdv else hd / 1.5,
                         hd95_max_mm=hd_max, hd95_max_vox=hd_max / 1.5)


def _results():
    return ["001", "002", "003"], [
        _vm([0.8, 0.6, 0.9], [4.0, 6.0, 2.0], hd_max=[5.0, 6.0, 7.0]),
        _vm([0.7, NAN, 0.5], [8.0, NAN, 3.0], hd_max=[9.0, NAN, 3.0]),  # Myo absent from GT and prediction
        _vm([0.0, 0.4, 0.6], [INF, 5.0, 1.0], hd_max=[INF, 5.0, 2.0]),  # RV missed
    ]


def test_per_volume_rows_and_means():
    ids, res = _results()
    rows = report.per_volume_rows(ids, res, STRUCTS)
    assert rows[0]["id"] == "001" and rows[0]["dice_RV"] == pytest.approx(0.8)
    assert rows[0]["dice_mean"] == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    assert rows[1]["dice_mean"] == pytest.approx((0.7 + 0.5) / 2)  # NaN excluded
    assert rows[2]["hd95_mm_mean"] == pytest.approx((5.0 + 1.0) / 2)  # inf excluded
    assert rows[2]["hd95_max_mm_mean"] == pytest.approx((5.0 + 2.0) / 2)  # inf excluded
    assert rows[0]["hd95_max_mm_LV"] == 7.0 and rows[0]["hd95_max_vox_LV"] == pytest.approx(7.0 / 1.5)
    assert list(rows[0])[1:] == [f"{m}_{s}" for m in ("dice", "hd95_mm", "hd95_max_mm", "assd_mm", "hd95_vox",
                                                      "hd95_max_vox", "assd_vox") for s in (*STRUCTS, "mean")]
    text = report.rows_to_csv(rows)
    parsed = list(csv.DictReader(text.splitlines()))
    assert parsed[1]["dice_Myo"] == "nan" and parsed[2]["hd95_mm_RV"] == "inf"
    assert parsed[1]["hd95_max_mm_Myo"] == "nan" and parsed[2]["hd95_max_mm_RV"] == "inf"
    assert float(parsed[0]["dice_LV"]) == pytest.approx(0.9)


def test_summary_stats(tmp_path):
    ids, res = _results()
    summary = report.write_reports(tmp_path, ids, res, STRUCTS, extra={"dataset": "acdc", "split": "test"})
    loaded = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: no NaN tokens
    assert "NaN" not in (tmp_path / "summary.json").read_text()
    assert loaded == summary
    rv = loaded["structures"]["RV"]
    assert rv["dice"]["mean"] == pytest.approx(0.5)
    assert rv["dice"]["std"] == pytest.approx(np.std([0.8, 0.7, 0.0]))
    assert rv["hd95_mm"] == {"mean": pytest.approx(6.0), "std": pytest.approx(2.0), "n": 2, "n_inf": 1}
    assert rv["hd95_max_mm"] == {"mean": pytest.approx(7.0), "std": pytest.approx(2.0), "n": 2, "n_inf": 1}
    lv_max = [7.0, 3.0, 2.0]
    assert loaded["structures"]["LV"]["hd95_max_vox"]["mean"] == pytest.approx(np.mean(lv_max) / 1.5)
    vol_max = [6.0, 6.0, 3.5]  # per-volume foreground means of hd95_max_mm (NaN, inf left out)
    assert loaded["overall"]["hd95_max_mm"]["mean"] == pytest.approx(np.mean(vol_max))
    assert loaded["overall"]["hd95_max_mm"]["std"] == pytest.approx(np.std(vol_max))
    assert "MONAI" in loaded["metric_definitions"]["hd95_max_mm"]
    assert "medpy" in loaded["metric_definitions"]["hd95_mm"] and "SSL4MIS" in loaded["metric_definitions"]["hd95_vox"]
    assert loaded["structures"]["Myo"]["dice"]["n"] == 2
    vol_means = [np.mean([0.8, 0.6, 0.9]), np.mean([0.7, 0.5]), np.mean([0.0, 0.4, 0.6])]
    assert loaded["overall"]["dice"]["mean"] == pytest.approx(np.mean(vol_means))
    assert loaded["overall"]["dice"]["std"] == pytest.approx(np.std(vol_means))
    assert loaded["n_volumes"] == 3 and loaded["dataset"] == "acdc"
    assert (tmp_path / "per_volume.csv").read_text().startswith("id,dice_RV,dice_Myo,dice_LV,dice_mean,")
    table = report.format_table(loaded)
    assert "RV" in table and "(1 inf)" in table and "0.500 ± " in table
    lines = table.splitlines()
    assert lines[2 + len(STRUCTS)].startswith("mean") and "7.00 ± 2.00 (1 inf)" in lines[2]
    assert lines[0].split() == ["structure", "Dice", "HD95", "medpy", "(mm)", "HD95", "MONAI", "(mm)", "ASSD", "(mm)",
                                "HD95", "medpy", "(vox)", "HD95", "MONAI", "(vox)", "ASSD", "(vox)"]
    assert table.endswith("mean ± std over volumes)\n" + report.HD95_LEGEND)
    assert "medpy" in lines[-2] and "SSL4MIS" in lines[-2] and "MONAI" in lines[-1] and "nnU-Net" in lines[-1]


def test_records_and_summaries_without_the_max_definition():
    # a VolumeMetrics built without hd95_max_* (older callers) gets NaN, not an error ...
    res = [VolumeMetrics(dice=np.array([0.9, 0.8, 0.7, 0.6]), hd95_mm=np.array([NAN, 1.0, 2.0, 3.0]),
                         assd_mm=np.array([NAN, 1.0, 1.0, 1.0]), hd95_vox=np.array([NAN, 1.0, 1.0, 1.0]))]
    assert np.all(np.isnan(res[0].hd95_max_mm)) and np.all(np.isnan(res[0].hd95_max_vox))
    s = report.summarize(["a"], res, STRUCTS)
    assert s["overall"]["hd95_max_mm"] == {"mean": None, "std": None, "n": 0, "n_inf": 0}
    # ... and a summary.json written before the column existed still prints (n/a in its columns)
    for block in [s["overall"], *s["structures"].values()]:
        del block["hd95_max_mm"], block["hd95_max_vox"]
    mean_row = report.format_table(s).splitlines()[2 + len(STRUCTS)].split("  ")
    cells = [c.strip() for c in mean_row if c.strip()]
    assert cells[0] == "mean" and cells[2] == "2.00 ± 0.00" and cells[3] == "n/a" and cells[6] == "n/a"


def test_summary_all_nan_structure():
    res = [_vm([NAN, 0.5, 0.5], [NAN, 1.0, 1.0])]
    s = report.summarize(["a"], res, STRUCTS)
    assert s["structures"]["RV"]["dice"] == {"mean": None, "std": None, "n": 0, "n_inf": 0}
    assert "n/a" in report.format_table(s)


# ---------------------------------------------------------------- aggregate


def _fake_run(root: Path, name, method, tr, comb, seed, dice_means):
    wd = root / name
    (wd / "eval_test").mkdir(parents=True)
    (wd / "config.json").write_text(json.dumps(
        {"stage": method, "dataset": "acdc", "no_of_tr_imgs": tr, "comb_tr_imgs": comb, "seed": seed}))
    res = [_vm(d, [2.0, 3.0, 4.0]) for d in dice_means]
    report.write_reports(wd / "eval_test", [str(i) for i in range(len(res))], res, STRUCTS,
                         extra={"dataset": "acdc"})
    return wd


def test_aggregate_tables(tmp_path):
    wds = [
        _fake_run(tmp_path, "b1", "baseline", "tr1", "c1", 0, [[0.5, 0.5, 0.5]]),
        _fake_run(tmp_path, "b2", "baseline", "tr1", "c2", 0, [[0.7, 0.7, 0.7]]),
        _fake_run(tmp_path, "j1", "joint", "tr1", "c1", 0, [[0.8, 0.8, 0.8]]),
        _fake_run(tmp_path, "j8", "joint", "tr8", "c1", 0, [[0.9, 0.9, 0.9], [0.7, 0.7, 0.7]]),
    ]
    B, J = "Baseline (random init)", "PLC inter (baseline init unknown) (release)"  # named by the settings
    runs = [aggregate.load_run(str(w)) for w in wds] + [aggregate.load_run(f"PLC={wds[2]}")]
    settings, run_rows = aggregate.aggregate(runs)
    by = {(r["method"], r["no_of_tr_imgs"]): r for r in settings}
    assert by[(B, "tr1")]["dice_mean"] == pytest.approx(0.6)
    assert by[(B, "tr1")]["dice_std"] == pytest.approx(0.1)
    assert by[(B, "tr1")]["n_runs"] == 2
    assert by[(B, "tr1")]["runs"] == "c1/s0 c2/s0"
    assert by[(J, "tr8")]["dice_mean"] == pytest.approx(0.8)
    assert by[("PLC", "tr1")]["dice_RV_mean"] == pytest.approx(0.8)
    assert len(run_rows) == 5
    md = aggregate.markdown_tables(runs)
    assert f"| {B} | 0.600 ± 0.100 (n=2) |  |" in md
    head = next(line for line in md.splitlines() if line.startswith("| method | labeled |"))
    assert head.endswith("| HD95 medpy (mm) | HD95 MONAI (mm) | ASSD (mm) | HD95 medpy (vox) | HD95 MONAI (vox) "
                         "| ASSD (vox) |")
    assert all(f"- {line}\n" in md for line in report.HD95_LEGEND.splitlines())
    # _fake_run: hd95_mm = [2, 3, 4] per structure (mean 3), hd95_max_mm twice that (mean 6)
    surface = "3.00 6.00 1.50 2.00 4.00".split()  # hd95_mm, hd95_max_mm, assd_mm, hd95_vox, hd95_max_vox
    assert "| " + " | ".join(f"{v} ± 0.00 (n=2)" for v in surface) + " | n/a |" in md  # _vm sets no assd_vox
    assert by[(B, "tr1")]["hd95_max_mm_mean"] == pytest.approx(6.0)
    assert by[(B, "tr1")]["hd95_max_vox_mean"] == pytest.approx(4.0)
    assert [r["hd95_max_mm"] for r in run_rows] == pytest.approx([6.0] * 5)
    assert f"| {J} | 0.800 ± 0.000 (n=1) | 0.800 ± 0.000 (n=1) |" in md
    paths = aggregate.write_results(runs, tmp_path / "results")
    rows = list(csv.DictReader(Path(paths["results.csv"]).read_text().splitlines()))
    plc_row = next(r for r in rows if r["method"] == "PLC")
    assert len(rows) == 4 and math.isclose(float(plc_row["dice_mean"]), 0.8)
    assert math.isclose(float(plc_row["hd95_max_mm_mean"]), 6.0) and "hd95_max_vox_std" in plc_row
    per_run = list(csv.DictReader(Path(paths["runs.csv"]).read_text().splitlines()))
    assert math.isclose(float(per_run[0]["hd95_max_mm"]), 6.0) and math.isclose(float(per_run[0]["hd95_mm"]), 3.0)


def test_method_label(tmp_path):
    (tmp_path / "lcl").mkdir()
    (tmp_path / "lcl" / "config.json").write_text(json.dumps({"stage": "local"}))
    (tmp_path / "gcl").mkdir()
    (tmp_path / "gcl" / "config.json").write_text(json.dumps({"stage": "global"}))
    assert aggregate.method_label({"stage": "baseline"}) == "Baseline (random init)"
    assert aggregate.method_label({"stage": "baseline", "init_from": str(tmp_path / "lcl")}) == \
        "GCL+LCL pre-training + fine-tuning"
    assert aggregate.method_label({"stage": "baseline", "init_from": str(tmp_path / "gcl")}) == \
        "GCL pre-training + fine-tuning (no LCL)"
    assert aggregate.method_label({"stage": "baseline", "init_from": str(tmp_path / "gone")}) == \
        "fine-tuned baseline (initialization unknown)"
    assert aggregate.method_label({"stage": "joint", "method": "PLC"}) == "PLC"
    assert aggregate.method_label({}) is None
    assert aggregate.method_label({"flags": {"stage": "joint"}}) is None  # config.json is flat: no nested search


def test_load_run_reads_only_the_flat_config(tmp_path):
    wd = _fake_run(tmp_path, "n", "joint", "tr8", "c3", 2, [[0.5, 0.5, 0.5]])
    (wd / "config.json").write_text(json.dumps({"flags": {"stage": "joint", "dataset": "acdc",
                                                          "no_of_tr_imgs": "tr8", "comb_tr_imgs": "c3", "seed": 2}}))
    run = aggregate.load_run(str(wd))  # training never writes a nested config.json: keys one level down are ignored
    assert (run.method, run.no_of_tr_imgs, run.comb_tr_imgs, run.seed) == (tmp_path.name, "?", "?", None)


def test_aggregate_errors(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        aggregate.load_run(str(tmp_path / "missing"))
    (tmp_path / "w").mkdir()
    with pytest.raises(InputError, match="evaluate.py"):
        aggregate.load_run(str(tmp_path / "w"))
    (tmp_path / "w" / "summary.json").write_text(json.dumps({"final_step": 10}))  # a stage summary
    with pytest.raises(InputError, match="not an evaluate.py summary"):
        aggregate.load_run(str(tmp_path / "w" / "summary.json"))


def test_aggregate_cli(tmp_path):
    w1 = _fake_run(tmp_path, "b1", "baseline", "tr1", "c1", 0, [[0.5, 0.5, 0.5]])
    w2 = _fake_run(tmp_path, "b2", "baseline", "tr1", "c2", 1, [[0.7, 0.7, 0.7]])
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "evaluation.aggregate", f"--workdirs={w1}", "--out", str(out),
                           str(w2)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "0.600 ± 0.100 (n=2)" in proc.stdout
    assert (out / "results.md").is_file() and (out / "runs.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "evaluation.aggregate", f"--workdirs={tmp_path}/nope"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert bad.returncode == 2 and bad.stderr.startswith("error: --workdirs")


# ---------------------------------------------------------------- plots


def _is_png(path):
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots(tmp_path):
    dice = np.array([[0.99, 0.8, 0.6, 0.9], [0.99, 0.7, NAN, 0.5]])
    assert _is_png(plots.dice_boxplot(dice, STRUCTS, tmp_path / "box.png"))
    rng = np.random.default_rng(0)
    image = rng.random((6, 32, 32)).astype(np.float32)
    gt = np.zeros((6, 32, 32), np.int16)
    gt[2:5, 8:20, 8:20] = 2
    assert plots.pick_slices(gt, 4) == [2, 3, 4]
    assert plots.pick_slices(np.zeros((10, 2, 2)), 4) == [0, 3, 6, 9]
    assert _is_png(plots.overlay_figure(image, gt, gt, 4, tmp_path / "ov.png", title="x"))
    assert _is_png(plots.overlay_figure(image, None, gt, 4, tmp_path / "ov2.png"))
    metrics_json = {"train": [{"step": s, "loss": 1.0 / s, "lr": 1e-3} for s in range(1, 5)],
                    "val": [{"step": 2, "val_dice": 0.5}, {"step": 4, "val_dice": 0.6}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics_json))
    m = read_metrics(tmp_path / "metrics.json")
    assert _is_png(plots.training_curves(m, tmp_path / "curves.png"))
    assert plots.training_curves({"train": [], "val": []}, tmp_path / "none.png") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json"):
        read_metrics(tmp_path / "bad.json")
