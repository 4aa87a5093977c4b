"""Evaluation on data dirs of the new layouts: HD95 / ASSD in mm only with a known voxel spacing (else
voxels only, and the output says so), the grid named in the summary, split volumes absent from a copy."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import configs
from _layout_helpers import write_cropped, write_ssl4mis
from data import preprocess
from evaluation import metrics, report
from evaluation.evaluator import run_evaluation
from evaluation.inference import surface_spacing
from tests import _eval_data as ed


def test_volume_metrics_without_spacing_gives_voxels_only():
    from medpy.metric import binary as medpy_binary

    gt = np.zeros((20, 18, 5), np.int16)
    pred = np.zeros_like(gt)
    gt[3:10, 4:12, 1:4] = 1
    pred[4:12, 4:12, 1:5] = 1
    gt[14:18, 10:16, 2:4] = 2
    m = metrics.volume_metrics(gt, pred, 4, None)
    assert np.all(np.isnan(m.hd95_mm)) and np.all(np.isnan(m.assd_mm))  # never as if 1 mm
    assert m.hd95_vox[1] == pytest.approx(medpy_binary.hd95(pred == 1, gt == 1))
    assert m.assd_vox[1] == pytest.approx(medpy_binary.assd(pred == 1, gt == 1))
    assert m.hd95_vox[2] == np.inf and m.assd_vox[2] == np.inf and np.isnan(m.assd_vox[3])
    with_mm = metrics.volume_metrics(gt, pred, 4, (1.5, 1.5, 10.0))
    np.testing.assert_array_equal(with_mm.hd95_vox, m.hd95_vox)
    np.testing.assert_array_equal(with_mm.assd_vox, m.assd_vox)
    assert with_mm.assd_mm[1] == pytest.approx(medpy_binary.assd(pred == 1, gt == 1, voxelspacing=(1.5, 1.5, 10)))
    # records built without assd_vox (older callers) get NaN, not an error
    assert np.all(np.isnan(metrics.VolumeMetrics(m.dice, m.hd95_mm, m.assd_mm, m.hd95_vox).assd_vox))


def test_surface_spacing_reads_meta_first():
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.diag([1.5, 1.5, 8.0, 1.0]))
    assert surface_spacing({"spacing": [1.5, 1.5, 8.0]}, img) == (1.5, 1.5, 8.0)
    assert surface_spacing({}, img) == (1.5, 1.5, 8.0)  # data dirs written before the flag: header
    assert surface_spacing({"spacing": [None, None, None]}, img) is None
    assert surface_spacing({"spacing": [1.5, 1.5, None]}, img) is None


def test_evaluation_on_h5_data_reports_pixels_only(tmp_path):
    raw = write_ssl4mis(tmp_path / "ACDC", patients={1: (1, 12), 2: (4, 11)}, shapes={2: (2, 44, 52)})
    dd = tmp_path / "pp"
    preprocess.preprocess_dataset("synthetic", raw, dd, layout="ssl4mis_h5")
    cfg = configs.get_config("synthetic")
    summary = run_evaluation(ed.oracle_predictor, dd, ["001", "002_ES"], cfg, tmp_path / "ev",
                             num_plot_volumes=0, verbose=False)
    assert summary["overall"]["dice"]["mean"] > 0.9  # scored on the h5 grid
    assert summary["overall"]["hd95_mm"]["mean"] is None and summary["overall"]["assd_mm"]["mean"] is None
    assert summary["overall"]["hd95_vox"]["mean"] is not None and summary["overall"]["assd_vox"]["n"] == 2
    assert summary["overall"]["hd95_max_mm"]["mean"] is None and summary["overall"]["hd95_max_vox"]["n"] == 2
    assert summary["surface_distance_units"] == "voxels only" and "SSL4MIS h5 grid" in summary["evaluation_grid"]
    table = report.format_table(summary)
    assert "HD95/ASSD in pixels (voxels) only" in table and "scored on the SSL4MIS h5 grid" in table
    assert "ASSD (vox)" in table.splitlines()[0]
    row = next(csv.DictReader((tmp_path / "ev" / "per_volume.csv").read_text().splitlines()))
    assert row["hd95_mm_lv"] == "nan" and math.isfinite(float(row["hd95_vox_lv"]))
    assert row["hd95_max_mm_lv"] == "nan" and math.isfinite(float(row["hd95_max_vox_lv"]))


def test_evaluation_mixed_and_known_spacing(tmp_path):
    dd = tmp_path / "pp"
    preprocess.preprocess_dataset("synthetic", write_cropped(tmp_path / "crop", slice_spacing=10.0), dd,
                                  layout="original_cropped")
    cfg = configs.get_config("synthetic")
    summary = run_evaluation(ed.oracle_predictor, dd, ["001", "002"], cfg, tmp_path / "ev", num_plot_volumes=0,
                             verbose=False)
    assert summary["surface_distance_units"] == "mm and voxels" and "surface_note" not in summary
    assert summary["overall"]["dice"]["mean"] == pytest.approx(1.0)  # identity geometry: oracle is exact
    assert "scored on the originals' cropped grid" in report.format_table(summary)
    from evaluation.evaluator import surface_units

    mixed = surface_units(dd, ["001", "002"], ["002"])
    assert mixed["surface_distance_units"] == "mm for some volumes" and "exclude 1 volume(s)" in mixed["surface_note"]


def test_present_ids_absent_volumes(tmp_path):
    from common.errors import InputError
    from evaluation.evaluator import present_ids

    dd = tmp_path / "pp"
    preprocess.preprocess_dataset("synthetic", write_cropped(tmp_path / "crop", folders=("patient007", "patient009")),
                                  dd, layout="original_cropped")
    assert present_ids(dd, ["007", "009"]) == (["007", "009"], [])
    with pytest.raises(InputError, match=r"1 of the 3 test volumes are absent \(008\); --allow_missing evaluates"):
        present_ids(dd, ["007", "008", "009"])
    assert present_ids(dd, ["007", "008", "009"], allow_missing=True) == (["007", "009"], ["008"])
    with pytest.raises(InputError, match="none of the 1 val volumes is present"):
        present_ids(dd, ["008"], allow_missing=True, what="val")
