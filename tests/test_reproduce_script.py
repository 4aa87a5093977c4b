"""scripts/reproduce.sh: the commands it chains, run with a recording stand-in for Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "reproduce.sh"


def _run(tmp_path, *args, **env):
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {log}\n"
                    "if [ \"$1 $2\" = \"-m data.preprocess\" ]; then\n"
                    "  for a in \"$@\"; do case $a in --out_dir) next=1;; *) [ -n \"$next\" ] && "
                    "{ mkdir -p \"$a\"; echo {} > \"$a/dataset.json\"; next=; };; esac; done\nfi\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), **env})
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


def test_chains_preprocess_and_the_reproduction(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    proc, calls = _run(tmp_path, "acdc", str(raw), str(out), "tr2", METHODS="baseline,plc", COMBS="c1,c3",
                       LAYOUT="original_cropped", SEEDS="0,1", EXTRA="--extra=--precision=mixed_bfloat16")
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"-m data.preprocess --dataset acdc --layout original_cropped --raw_dir {raw} --out_dir {out}/prep"
    assert calls[1] == (f"-m training.reproduction --dataset acdc --data_dir {out}/prep --out_dir {out} "
                        "--no_of_tr_imgs tr2 --seeds 0,1 --methods baseline,plc --combs c1,c3 --allow_missing "
                        "--extra=--precision=mixed_bfloat16")  # the cropped copy lacks patient 090
    assert len(calls) == 2
    # Rerun: the preprocessed folder is reused.
    _, again = _run(tmp_path, "acdc", str(raw), str(out))
    assert not any("data.preprocess" in c for c in again[2:])
    assert again[-1].endswith("--no_of_tr_imgs tr1 --seeds 0")


def test_dry_run_lists_every_row_for_every_combination(tmp_path):
    """The issue's check: `scripts/reproduce.sh --dry_run acdc R OUT tr8` lists all six rows for c1..c3, exits 0."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry_run", "acdc", str(tmp_path / "R"), str(tmp_path / "OUT"), "tr8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for comb in ("c1", "c2", "c3"):
        assert f"## tr8 {comb} seed 0: baseline, gcl_lcl, selftrain_gcl_lcl, plc_gcl_lcl, plc_intra, plc" in out
        for wd in ("baseline", "gcl_lcl_ft", "selftrain_gcl_lcl", "plc_gcl_lcl", "plc_intra", "plc"):
            assert f"evaluate.py --workdir={tmp_path}/OUT/runs/tr8_{comb}_s0/{wd} --split=test" in out
    assert "tr8_c4" not in out  # ACDC tr8 has three combinations
    assert out.count(f"--workdir={tmp_path}/OUT/runs/pretrain_s0/gcl --stage=global") == 3  # shared, listed per run
    assert "## total: 3 runs; iterations to run by step kind: supervised 45006, joint 180000, global 10001, local 10001" \
        in out
    assert "## projected:" in out and "no GPU step time was measured" in out
    assert not (tmp_path / "OUT").exists()  # nothing written, nothing preprocessed


def test_reproduction_combinations_per_dataset():
    from training.reproduction import combinations

    assert combinations("acdc", "tr8") == ["c1", "c2", "c3"]
    assert combinations("acdc", "tr1") == ["c1", "c2", "c3", "c4", "c5"]
    assert combinations("mmwhs", "tr2") == ["c1", "c2", "c3", "c4"]  # MM-WHS tr2 has no c5
    assert combinations("mmwhs", "tr8") == ["c1", "c2", "c3"]
    assert combinations("prostate_md", "trall") == ["c1"]  # the same list for every combination


def test_bad_arguments(tmp_path):
    proc, calls = _run(tmp_path, "acdc")
    assert proc.returncode == 2 and "reproduce.sh [--dry_run] DATASET RAW_DIR OUT" in proc.stderr and calls == []
    proc, _ = _run(tmp_path, "brats", str(tmp_path), str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.strip() == "DATASET: brats is not acdc, prostate_md or mmwhs"
    proc, _ = _run(tmp_path, "acdc", str(tmp_path / "nope"), str(tmp_path / "o"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
