"""What the benchmarks ran on: CPU model and the instruction-set flags that decide mixed-precision speed.

bfloat16 matrix units exist on CPUs with AVX512_BF16 (bf16 dot products) or AMX (``amx_bf16`` tile
matrix multiply); without them oneDNN emulates bfloat16 through float32 and ``mixed_bfloat16``
is no faster (often slower) than fp32. ``avx512_fp16`` / ``amx_fp16`` are the float16 counterparts,
but TensorFlow 2.21's CPU kernels for float16 convolution gradients do not use them (see the
precision section of ``bench.training``).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16", "amx_fp16")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, logical CPU count and the :data:`FLAGS_OF_INTEREST` of a ``/proc/cpuinfo`` text.

    Returns:
        ``{"model": str | None, "logical_cpus": int, "flags": {flag: bool}, "bf16_hardware": bool}``
        (``bf16_hardware``: AVX512_BF16 or AMX-BF16 present).
    """
    model = None
    flags: set[str] = set()
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            processors += 1
        elif key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    have = {f: f in flags for f in FLAGS_OF_INTEREST}
    return {"model": model, "logical_cpus": processors, "flags": have,
            "bf16_hardware": have["avx512_bf16"] or have["amx_bf16"]}


def cpu_info(path: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """:func:`parse_cpuinfo` of this machine, plus ``usable_cpus`` (the CPUs this process may use).

    Without a readable ``path`` (not Linux) the flags are unknown (``None``).
    """
    p = Path(path)
    try:
        info = parse_cpuinfo(p.read_text())
    except OSError:
        info = {"model": platform.processor() or None, "logical_cpus": os.cpu_count(),
                "flags": {f: None for f in FLAGS_OF_INTEREST}, "bf16_hardware": None}
    info["usable_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return info
