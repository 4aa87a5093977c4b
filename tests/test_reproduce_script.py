"""scripts/reproduce.sh: the commands it chains, run with a recording stand-in for Python."""
from __future__ import annotations

import subprocess
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


def test_chains_preprocess_pipelines_and_reference_table(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    proc, calls = _run(tmp_path, "acdc", str(raw), str(out), "tr2", "c1,c3", METHODS="baseline,plc,gcl_lcl",
                       LAYOUT="original_cropped")
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"-m data.preprocess --dataset acdc --layout original_cropped --raw_dir {raw} --out_dir {out}/prep"
    for call, comb in zip(calls[1:3], ("c1", "c3")):
        assert call.startswith(f"run_pipeline.py --dataset acdc --data_dir {out}/prep --out_dir {out}/runs/tr2_{comb}_s0 "
                               f"--preset paper --no_of_tr_imgs tr2 --comb_tr_imgs {comb} --methods baseline,plc,gcl_lcl")
        assert call.endswith("--allow_missing")  # the cropped copy lacks patient 090
    runs = [f"{out}/runs/tr2_{c}_s0" for c in ("c1", "c3")]
    wds = " ".join(f"baseline={r}/baseline plc={r}/plc gcl_lcl={r}/gcl_lcl_ft" for r in runs)
    assert calls[3] == f"-m evaluation.aggregate --out {out}/results --reference medIA2023 {wds}"
    assert len(calls) == 4

    # Rerun: the preprocessed folder is reused.
    _, again = _run(tmp_path, "acdc", str(raw), str(out), "tr1", "c1")
    assert not any("data.preprocess" in c for c in again[4:])


def test_bad_arguments(tmp_path):
    proc, calls = _run(tmp_path, "acdc")
    assert proc.returncode == 2 and "reproduce.sh DATASET RAW_DIR OUT" in proc.stderr and calls == []
    proc, _ = _run(tmp_path, "brats", str(tmp_path), str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.strip() == "DATASET: brats is not acdc, prostate_md or mmwhs"
    proc, _ = _run(tmp_path, "acdc", str(tmp_path / "nope"), str(tmp_path / "o"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
