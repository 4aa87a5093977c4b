"""The PyTorch peer of ``bench.training``: run it in a subprocess, parse its records, compare.

The peer (``shared/bench/peer_torch.py`` beside the repository) trains the same UNet in PyTorch with
its own Python (a separate venv; torch is never a dependency of this project) and prints one JSON
line per configuration: ``{"peer", "batch", "size", "median_step_s", "imgs_per_s", "threads", ...}``.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

PEER_NAME = "chaitanya_unet_pytorch"
DEFAULT_PEER_SCRIPT = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "peer_torch.py"

# ratio key -> (our result key, our measurement, images of our step, peer batch, peer size)
RATIOS: dict[str, tuple[str, str, int, int, int]] = {
    "20x192": ("192x192", "baseline_images_per_s", 20, 20, 192),
    "40x192": ("192x192", "joint_images_per_s", 40, 40, 192),
    "40x192_seg_only": ("192x192", "seg_only_40_step_s", 40, 40, 192),
    "8x64": ("64x64", "baseline_images_per_s", 20, 8, 64),
}
RATIO_BASIS = {
    "20x192": "our 20-image baseline step / peer batch 20, 192x192 (images/s)",
    "40x192": "our 40-image PLC joint step / peer batch 40, 192x192 (images/s)",
    "40x192_seg_only": "our 40-image seg-only step (same forward as joint, no contrastive loss) / peer batch 40, "
                       "192x192 (images/s)",
    "8x64": "our 20-image baseline step at 64x64 / peer batch 8, 64x64 (images/s; batches differ)",
}


def parse_records(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects of ``stdout``, one per line; other lines (log text, non-objects) are skipped."""
    records = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def run_peer(python: str | os.PathLike, script: str | os.PathLike, timeout_s: float = 1800.0,
             env: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Run ``python script`` and parse its JSON lines; never raises for a failing peer.

    Args:
        python: interpreter of the peer's venv.
        script: the peer script.
        timeout_s: wall-clock limit; the peer is killed after it.
        env: environment of the peer (default: this process's, so ``ONEDNN_MAX_CPU_ISA``,
            ``ATEN_CPU_CAPABILITY``, ``OMP_NUM_THREADS`` ... set by the user apply to both).

    Returns:
        ``(records, error)``: the parsed records (those printed before a failure are kept) and a
        one-line error message, ``None`` when the peer exited 0 with at least one record.
    """
    cmd = [os.fspath(python), os.fspath(script)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=dict(os.environ if env is None else env))
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return parse_records(out), f"peer timed out after {timeout_s:g} s: {' '.join(cmd)}"
    except OSError as e:
        return [], f"peer could not start: {' '.join(cmd)}: {e}"
    records = parse_records(proc.stdout)
    if proc.returncode != 0:
        tail = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        return records, (f"peer exited with status {proc.returncode}: {' '.join(cmd)}"
                         + (f": {tail[-1]}" if tail else ""))
    if not records:
        return records, f"peer printed no JSON record: {' '.join(cmd)}"
    return records, None


def _peer_rate(records: Sequence[Mapping[str, Any]], batch: int, size: int, peer: str) -> float | None:
    for r in records:
        if r.get("peer") == peer and r.get("batch") == batch and r.get("size") == size:
            rate = r.get("imgs_per_s")
            return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None
    return None


def ours_vs_peer(ours: Mapping[str, Mapping[str, float]], records: Sequence[Mapping[str, Any]],
                 peer: str = PEER_NAME) -> dict[str, float]:
    """Our images/s over the peer's, per configuration of :data:`RATIOS` (> 1: we are faster).

    Args:
        ours: ``bench.training`` results by size key, e.g. ``{"192x192": {"baseline_images_per_s": ...,
            "joint_images_per_s": ..., "seg_only_40_step_s": ...}, "64x64": {...}}``.
        records: the peer's records (:func:`parse_records`).
        peer: the peer model name to compare with.

    Returns:
        ``{ratio key: ratio}`` for the configurations both sides measured (others are left out).
    """
    out = {}
    for key, (size_key, measure, images, batch, size) in RATIOS.items():
        value = ours.get(size_key, {}).get(measure)
        rate = _peer_rate(records, batch, size, peer)
        if value is None or rate is None or value <= 0:
            continue
        ours_rate = images / value if measure.endswith("_step_s") else value
        out[key] = ours_rate / rate
    return out
