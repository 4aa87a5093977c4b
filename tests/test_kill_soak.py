"""bench.kill_soak in the suite: a reduced soak (3 SIGKILLs per stage of a tiny baseline and a tiny
joint stage, each followed by a rerun of the same command, then every file of the workdirs read
back), and the soak's verdict (``failures``, exit status 1) on results with a failure in them."""
from __future__ import annotations

import json

import pytest

from bench import kill_soak
from tests._training_data import tiny_data  # noqa: F401  (session fixture)

# Tiny stages (64x64 synthetic data, no augmentation, 2 slices a step, a checkpoint every step):
# long enough that a run is still going at each of its 3 kills, short enough for the suite. A
# targeted kill (during a checkpoint / best-state / pseudo-label write) that does not come within
# 2 s of the run being ready is a random one: the full soak (README) is the one that hits writes.
BASELINE = ["--n_iter=30", "--ckpt_every=1", "--val_every=10", "--batch_size=2", "--data_aug=0"]
JOINT = ["--rounds=2", "--n_iter_per_round=4", "--ckpt_every=1", "--val_every=2", "--crf=false", "--batch_size=2",
         "--data_aug=0", "--crf_workers=1"]


def _result(**kill) -> dict:
    ev = {"mode": "random", "finished_before_kill": False, "returncode": -9, "resumed": True,
          "latest_checkpoint_at_kill": 3, "next_run_resumed_from": 3, **kill}
    stage = {"kills": [ev], "final_returncode": 0, "final_step": 8, "expected_step": 8}
    return {"stages": {"baseline": stage}, "files": {"unreadable": [], "leftover_temp_files": []}}


def test_failures_are_found_and_make_the_soak_exit_1(monkeypatch, tmp_path, capsys):
    assert kill_soak.failures(_result()) == []
    assert kill_soak.failures(_result(resumed=False, next_run_resumed_from=0)) == [
        "baseline run 1: killed with checkpoint 3, the next run resumed from step 0"]
    assert kill_soak.failures(_result(finished_before_kill=True, returncode=2)) == [
        "baseline run 1: exited with status 2 before its kill"]
    bad = _result()
    bad["stages"]["baseline"].update(final_returncode=1, final_step=5)
    bad["files"] = {"unreadable": [{"file": "W/config.json", "error": "JSONDecodeError: x"}],
                    "leftover_temp_files": ["W/ckpt/ckpt-3_temp/x"]}
    assert kill_soak.failures(bad) == ["baseline final run: exit status 1", "baseline final run: step 5, expected 8",
                                       "unreadable: W/config.json (JSONDecodeError: x)",
                                       "leftover temporary file: W/ckpt/ckpt-3_temp/x"]
    # The command: its JSON on stdout, one line per failure on stderr, exit status 1.
    monkeypatch.setattr(kill_soak, "soak", lambda *a, **k: dict(_result(resumed=False, next_run_resumed_from=0),
                                                                failures=["baseline run 1: x"]))
    monkeypatch.setattr("sys.argv", ["kill_soak", f"--out_dir={tmp_path}", f"--data_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exc:
        kill_soak.main()
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["failures"] == ["baseline run 1: x"] and err.splitlines() == ["error: baseline run 1: x"]
    monkeypatch.setattr(kill_soak, "soak", lambda *a, **k: dict(_result(), failures=[]))
    with pytest.raises(SystemExit) as exc:
        kill_soak.main()
    assert exc.value.code == 0


def test_reduced_kill_soak(tiny_data, tmp_path):  # noqa: F811
    res = kill_soak.soak(tmp_path / "soak", tiny_data, kills=3, seed=0, fallback_s=2.0, baseline_flags=BASELINE,
                         joint_flags=JOINT, delay_s=(0.2, 1.0))
    assert res["failures"] == [], json.dumps(res, indent=1)[-6000:]
    for stage in ("baseline", "joint"):
        r = res["stages"][stage]
        assert r["killed"] == r["resumed"] == 3, r
        assert r["final_step"] == r["expected_step"]
    assert res["files"]["checked"] > 0 and res["files"]["checkpoint_dirs"] >= 3
