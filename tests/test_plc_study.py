"""scripts/plc_study.py: the pre-registered study writes its validation-only choice before any test
volume is evaluated, and reports paired differences with t-intervals."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from training import pipeline

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plc_study", ROOT / "scripts" / "plc_study.py")
plc_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plc_study)

VAL = {"baseline": [0.5, 0.6], "plc": [0.4, 0.5], "plc_plus": [0.7, 0.8]}  # per-volume validation Dice


class FakeRuns:
    """Stands in for the pipeline's training and evaluation; records the order of events."""

    def __init__(self, out: Path) -> None:
        self.out, self.events = out, []

    def train(self, opts):
        self.events.append(("train", opts.seed))
        wds = {m: Path(opts.out_dir) / m for m in opts.methods}
        for m, wd in wds.items():
            wd.mkdir(parents=True, exist_ok=True)
            (wd / "config.json").write_text(json.dumps({"stage": "baseline"} if m == "baseline" else {}))
        return wds

    def evaluate(self, opts, workdirs, split="test", export=True):
        self.events.append((split, opts.seed, (self.out / plc_study.CHOICE).exists()))
        assert not export
        out = {}
        for m, wd in workdirs.items():
            vols = VAL[m] if split == "val" else [v + 0.01 * opts.seed for v in VAL[m]]
            (wd / f"eval_{split}").mkdir(exist_ok=True)
            rows = "\n".join(f"{i},{v}" for i, v in enumerate(vols))
            (wd / f"eval_{split}" / "per_volume.csv").write_text("id,dice_mean\n" + rows + "\n")
            out[m] = {"overall": {"dice": {"mean": float(np.mean(vols))}}}
        return out


@pytest.fixture
def fake(monkeypatch, tmp_path):
    runs = FakeRuns(tmp_path / "out")
    monkeypatch.setattr(pipeline, "train_methods", runs.train)
    monkeypatch.setattr(pipeline, "evaluate_methods", runs.evaluate)
    return runs


def test_choice_is_written_before_any_test_evaluation(fake, tmp_path, capsys):
    report = plc_study.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--seeds", "0,1,2"])
    tests = [e for e in fake.events if e[0] == "test"]
    assert len(tests) == 3 and all(written for _, _, written in tests)  # choice.json existed at every test eval
    vals = [e for e in fake.events if e[0] == "val"]
    assert all(not written for _, _, written in vals)  # ... and not yet while validating
    assert fake.events.index(("test", 0, True)) > max(fake.events.index(v) for v in vals)
    choice = json.loads((tmp_path / "out" / plc_study.CHOICE).read_text())
    assert "test" not in json.dumps(choice).replace("protocol", "")  # no test number in the choice
    assert choice["choice"]["plc_plus"]["recommended"] is True and choice["choice"]["plc"]["recommended"] is False
    assert choice["choice"]["plc_plus"]["mean"] == pytest.approx(0.2)
    assert report["test_paired"]["plc_plus"]["mean"] == pytest.approx(0.2)
    out = capsys.readouterr().out
    assert "choice (validation only): plc_plus - baseline = +0.200" in out and "Test Dice per seed" in out
    assert (tmp_path / "out" / "study.md").is_file()


def test_a_decided_study_is_not_redecided_with_other_seeds(fake, tmp_path):
    plc_study.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--seeds", "0,1"])
    with pytest.raises(InputError, match="a study is decided once"):
        plc_study.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--seeds", "0,1,2"])


def test_statistics_against_hand_computed_values():
    iv = plc_study.paired_interval([0.1, 0.3])  # mean 0.2, sd 0.1414, t(0.975, 1) = 12.706
    assert iv["mean"] == pytest.approx(0.2)
    assert iv["high"] - iv["mean"] == pytest.approx(12.7062 * 0.141421 / np.sqrt(2), rel=1e-4)
    assert plc_study.paired_interval([0.1])["low"] is None
    assert np.isnan(plc_study.bootstrap_std(np.array([0.5])))
    b = plc_study.bootstrap_std(np.array([0.0, 1.0]), n=20000)
    assert b == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # sd of a 2-volume mean: sqrt(0.25 / 2)
