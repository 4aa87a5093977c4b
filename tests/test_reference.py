"""evaluation.reference: the MedIA 2023 table as data, run-to-method matching, aggregate --reference."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from evaluation import aggregate, reference, report
from evaluation.metrics import VolumeMetrics

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


def test_medIA2023_table_complete_and_spot_values():
    rows = reference.load_reference("medIA2023")
    assert len(rows) == 6 * 3 * 3 + 3
    table = {(r.dataset, r.method, r.no_of_tr_imgs): r.dice for r in rows}
    for ds in ("acdc", "prostate_md", "mmwhs"):
        for m in reference.METHODS:
            for tr in (("trall",) if m == "benchmark" else ("tr1", "tr2", "tr8")):
                assert (ds, m, tr) in table
    assert table[("acdc", "baseline", "tr1")] == 0.614
    assert table[("acdc", "plc_inter", "tr1")] == 0.759
    assert table[("acdc", "plc_inter_gcl_lcl", "tr2")] == 0.845
    assert table[("prostate_md", "self_training_gcl_lcl", "tr8")] == 0.698
    assert table[("mmwhs", "plc_intra", "tr1")] == 0.599
    assert table[("mmwhs", "benchmark", "trall")] == 0.787
    assert "medIA2023" in reference.available()
    with pytest.raises(InputError, match=r"--reference=nips2020: unknown reference table; available: .*medIA2023"):
        reference.load_reference("nips2020")


def _cfg(tmp_path, name, **cfg):
    wd = tmp_path / name
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "config.json").write_text(json.dumps(cfg))
    return str(wd)


def test_reference_method_matching(tmp_path):
    lcl = _cfg(tmp_path, "lcl", stage="local")
    gcl = _cfg(tmp_path, "gcl", stage="global")
    ft = _cfg(tmp_path, "ft", stage="baseline", init_from=lcl)
    base = _cfg(tmp_path, "base", stage="baseline")
    rm = reference.reference_method
    release = {"plc_warm_start": False, "plc_round_floor": False, "crf": True, "plc_global_best": False,
               "replicate_plc_loss_weighting": True}
    assert rm({"stage": "baseline"}, "tr1") == "baseline"
    assert rm({"stage": "baseline"}, "trall") == "benchmark"
    assert rm({"stage": "baseline", "init_from": lcl}, "tr2") == "baseline_gcl_lcl"
    assert rm({"stage": "baseline", "init_from": gcl}, "tr2") is None  # GCL only: no row
    assert rm({"stage": "joint", "init_from": base, "local_loss_exp_no": 1, **release}, "tr1") == "plc_inter"
    assert rm({"stage": "joint", "init_from": base, "local_loss_exp_no": 0, **release}, "tr1") == "plc_intra"
    assert rm({"stage": "joint", "init_from": ft, **release}, "tr8") == "plc_inter_gcl_lcl"
    assert rm({"stage": "joint", "init_from": ft, "lamda_local": 0.0, **release}, "tr8") == "self_training_gcl_lcl"
    assert rm({"stage": "joint", "init_from": ft, "local_loss_exp_no": 0, **release}, "tr8") is None
    # The port's variant and any modified joint run: no published counterpart, whatever its label.
    for change in ({"plc_warm_start": True}, {"plc_round_floor": True}, {"crf": False}, {"plc_global_best": True},
                   {"plc_warm_start": True, "plc_round_floor": True, "crf": False}, {"lamda_local": 0.5}):
        assert rm({"stage": "joint", "init_from": base, **release, **change}, "tr1") is None, change
    # The mean-over-pairs weighting (the stage scripts' fix of 9.3.1) is still the paper's method.
    assert rm({"stage": "joint", "init_from": base, **release, "replicate_plc_loss_weighting": False},
              "tr1") == "plc_inter"
    assert rm({}, "tr1") is None  # no recorded settings: nothing is matched
    assert rm({"stage": "joint", "init_from": str(tmp_path / "gone"), **release}, "tr1") is None
    assert rm({"stage": "global"}, "tr52") is None


def _run(tmp_path, name, cfg, dice_means, summary_extra=None):
    wd = Path(_cfg(tmp_path, name, **cfg))
    res = [VolumeMetrics(dice=np.array([0.99, d, d, d]), hd95_mm=np.array([NAN, 2, 2, 2.0]),
                         assd_mm=np.array([NAN, 1, 1, 1.0]), hd95_vox=np.array([NAN, 1, 1, 1.0])) for d in dice_means]
    report.write_reports(wd / "eval_test", [str(i) for i in range(len(res))], res, ("rv", "myo", "lv"),
                         extra={"dataset": cfg["dataset"], **(summary_extra or {})})
    return str(wd)


def test_compare_and_aggregate_cli(tmp_path):
    common = {"dataset": "acdc", "no_of_tr_imgs": "tr1", "seed": 0}
    b1 = _run(tmp_path, "b1", {**common, "stage": "baseline", "comb_tr_imgs": "c1"}, [0.5, 0.7])
    b2 = _run(tmp_path, "b2", {**common, "stage": "baseline", "comb_tr_imgs": "c2"}, [0.8])
    j1 = _run(tmp_path, "j1", {**common, "stage": "joint", "comb_tr_imgs": "c1", "init_from": b1, "crf": True,
                               "plc_warm_start": False, "plc_round_floor": False,
                               "replicate_plc_loss_weighting": True}, [0.7],
              summary_extra={"evaluation_grid": "the originals' cropped grid (1.36719 x 1.36719 mm in-plane, 192x192)",
                             "missing_ids": ["090"]})
    s1 = _run(tmp_path, "s1", {"dataset": "acdc", "no_of_tr_imgs": "ssl4mis3", "comb_tr_imgs": "c1", "stage": "baseline"},
              [0.4])
    p1 = _run(tmp_path, "p1", {**common, "stage": "joint", "comb_tr_imgs": "c1", "init_from": b1, "crf": False,
                               "plc_warm_start": True, "plc_round_floor": True,
                               "replicate_plc_loss_weighting": False}, [0.9])
    runs = [aggregate.load_run(w) for w in (b1, b2, j1, s1, p1)]
    rows = {(r["method"], r["no_of_tr_imgs"]): r for r in reference.compare(runs, "medIA2023")}
    base = rows[("Baseline (random init)", "tr1")]
    assert base["reference_method"] == "baseline" and base["paper"] == 0.614 and base["n_runs"] == 2
    assert base["ours_mean"] == pytest.approx(0.7) and base["ours_std"] == pytest.approx(0.1)
    assert base["difference"] == pytest.approx(0.7 - 0.614)
    plc = rows[("PLC (release)", "tr1")]
    assert plc["reference_method"] == "plc_inter" and plc["paper"] == 0.759
    assert rows[("Baseline (random init)", "ssl4mis3")]["paper"] is None  # not a setting of the paper
    assert "no acdc ssl4mis3 number" in rows[("Baseline (random init)", "ssl4mis3")]["why_no_paper"]
    plus = rows[("PLC+ (port variant: warm start, round floor, no CRF)", "tr1")]
    assert plus["paper"] is None and plus["reference_method"] is None and "port's variant" in plus["why_no_paper"]
    text = reference.format_comparison(list(rows.values()), "medIA2023")
    assert ("| acdc | Baseline (random init) | supervised baseline, random init | tr1 | 0.700 ± 0.100 (n=2) | 0.614 "
            "| +0.086 |") in text
    assert "| acdc | PLC (release) | proposed, random init, inter | tr1 | 0.700 ± 0.000 (n=1) | 0.759 | -0.059 |" in text
    assert ("| PLC+ (port variant: warm start, round floor, no CRF) | no published "
            "counterpart (PLC+ is the port's variant: the paper has no such row) | tr1 | 0.900 ± 0.000 (n=1) | - | - |"
            ) in text
    assert "the originals' cropped grid" in text and "native grid of the original files" in text
    assert "Test volumes absent from our data and left out: 090." in text
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "evaluation.aggregate", "--out", str(out), "--reference", "medIA2023",
                           b1, b2, j1], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| 0.700 ± 0.100 (n=2) | 0.614 | +0.086 |" in proc.stdout
    assert (out / "reference.md").read_text() in proc.stdout and (out / "reference.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "evaluation.aggregate", "--out", str(tmp_path / "r2"),
                          "--reference", "nope", b1], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --reference=nope: unknown reference table; available: medIA2023"]
    assert not (tmp_path / "r2").exists()
