"""scripts/plc_ablation.py: the commands it chains and the table it assembles, with the stage
commands replaced by a recorder that writes what finished runs leave behind."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("plc_ablation", ROOT / "scripts" / "plc_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_commands_and_table(tmp_path, monkeypatch, capsys):
    mod = _module()
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        fl = dict(a[2:].split("=", 1) for a in cmd[2:] if a.startswith("--") and "=" in a)
        wd = Path(fl["workdir"])
        if cmd[1] == "evaluate.py":
            (wd / "eval_test").mkdir(parents=True, exist_ok=True)
            (wd / "eval_test" / "summary.json").write_text(json.dumps({"overall": {"dice": {"mean": 0.5}}}))
            return
        wd.mkdir(parents=True, exist_ok=True)
        summary = {"best_val_dice": 0.6}
        if fl["stage"] == "pseudolabel":
            pl = wd / "pseudo_labels" / "round_0"
            pl.mkdir(parents=True)
            dice = 0.1 if fl["crf"] == "true" else 0.4
            (pl / "manifest.json").write_text(json.dumps({"mean_dice_vs_label": {"final": dice}}))
        if fl["stage"] == "joint":
            summary["rounds"] = [{"round": 0, "pseudo_labels": fl["pseudo_label_dir"], "start_val_dice": 0.55}]
        (wd / "summary.json").write_text(json.dumps(summary))

    monkeypatch.setattr(mod, "_run", fake_run)
    monkeypatch.setattr(sys, "argv", ["plc_ablation.py", "--data_dir=D", f"--out_dir={tmp_path}",
                                      "--variants=release,warm_floor,crf", "--seed=3"])
    mod.main()
    stages = [(c[1], next((a for a in c if a.startswith("--stage=")), None)) for c in calls]
    assert stages[:5] == [("train_selftrain.py", "--stage=baseline"), ("train_selftrain.py", "--stage=pseudolabel"),
                          ("train_selftrain.py", "--stage=pseudolabel"), ("train_selftrain.py", "--stage=joint"),
                          ("train_selftrain.py", "--stage=joint")]
    joints = {Path(next(a for a in c if a.startswith("--workdir="))[10:]).name: c for c in calls
              if "--stage=joint" in c}
    release, warm_floor, crf = joints["plc_release"], joints["plc_warm_floor"], joints["plc_crf"]
    assert "--noplc_warm_start" in release and "--plc_warm_start" not in release  # faithful flags explicit
    assert release.index("--noplc_warm_start") < warm_floor.index("--plc_warm_start")  # variant flags win
    assert "--crf=true" in crf and f"--pseudo_label_dir={tmp_path / 'pseudolabel_crf' / 'pseudo_labels' / 'round_0'}" in crf
    assert all("--seed=3" in c for c in calls if c[1] == "train_selftrain.py")
    table = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert table["baseline"] == {"val_dice": 0.6, "test_dice": 0.5, "pool_dice_r0_nocrf": 0.4, "pool_dice_r0_crf": 0.1}
    assert table["plc_crf"]["pool_dice_r0"] == 0.1 and table["plc_release"]["pool_dice_r0"] == 0.4
    assert table["plc_warm_floor"]["start_val_r0"] == 0.55
    assert "| plc_warm_floor |" in capsys.readouterr().out


def test_unknown_variant(tmp_path, monkeypatch):
    mod = _module()
    monkeypatch.setattr(sys, "argv", ["plc_ablation.py", "--data_dir=D", f"--out_dir={tmp_path}", "--variants=nope"])
    with pytest.raises(SystemExit) as exc:
        mod.main()
    assert exc.value.code == 2
