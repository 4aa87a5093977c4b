"""What the benchmarks ran on: CPU model, vendor, ISA level, cache sizes and the machine kind.

The project's CPU machines come in three kinds (:data:`KINDS`), told apart by vendor and flags
(:func:`machine_kind`); their speeds differ ~5x, and an ``ONEDNN_MAX_CPU_ISA=AVX2`` emulation on an
AVX-512 kind does not predict the AVX2-only kind (different caches and memory system), so every
``bench.training`` JSON names the kind it ran on.

bfloat16 matrix units exist on CPUs with AVX512_BF16 (bf16 dot products) or AMX (``amx_bf16`` tile
matrix multiply); without them oneDNN emulates bfloat16 through float32 and ``mixed_bfloat16``
is no faster (often slower) than fp32. ``avx512_fp16`` / ``amx_fp16`` are the float16 counterparts,
but TensorFlow 2.21's CPU kernels for float16 convolution gradients do not use them (see the
precision section of ``bench.training``).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16", "amx_fp16")
KINDS = ("Intel Xeon AVX-512/AMX", "AMD EPYC AVX-512", "AMD EPYC AVX2-only")
CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"
_SIZE_UNITS = {"": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "MIB": 1024 ** 2,
               "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3}


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, logical CPU count and the :data:`FLAGS_OF_INTEREST` of a ``/proc/cpuinfo`` text.

    Returns:
        ``{"model": str | None, "vendor": str | None, "logical_cpus": int, "flags": {flag: bool},
        "bf16_hardware": bool, "isa": str | None}`` (``bf16_hardware``: AVX512_BF16 or AMX-BF16
        present; ``isa``: :func:`isa_level`).
    """
    model = vendor = None
    flags: set[str] = set()
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            processors += 1
        elif key == "model name" and model is None:
            model = value.strip()
        elif key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    have = {f: f in flags for f in FLAGS_OF_INTEREST}
    return {"model": model, "vendor": vendor, "logical_cpus": processors, "flags": have,
            "bf16_hardware": have["avx512_bf16"] or have["amx_bf16"], "isa": isa_level(have)}


def isa_level(flags: dict[str, bool | None]) -> str | None:
    """``"avx512+amx"`` (AVX-512 and AMX tiles), ``"avx512"``, ``"avx2"``, ``"pre-avx2"``; ``None`` if unknown."""
    if flags.get("avx2") is None:
        return None
    if flags.get("avx512f"):
        return "avx512+amx" if flags.get("amx_tile") else "avx512"
    return "avx2" if flags.get("avx2") else "pre-avx2"


def machine_kind(vendor: str | None, isa: str | None) -> str:
    """The project's machine kind (one of :data:`KINDS`) from the CPU vendor id and :func:`isa_level`.

    Anything else is ``"other (<vendor>, <isa>)"``; an unknown vendor or ISA gives ``"unknown"``.
    """
    if vendor is None or isa is None:
        return "unknown"
    if vendor == "GenuineIntel" and isa in ("avx512", "avx512+amx"):
        return KINDS[0]
    if vendor == "AuthenticAMD" and isa in ("avx512", "avx512+amx"):
        return KINDS[1]
    if vendor == "AuthenticAMD" and isa == "avx2":
        return KINDS[2]
    return f"other ({vendor}, {isa})"


def parse_size(text: str) -> int | None:
    """Bytes of a cache size as sysfs (``48K``) or lscpu (``96 KiB``, ``4 MiB``) write it; ``None`` if not one."""
    t = text.strip().upper().replace(" ", "")
    digits = len(t) - len(t.lstrip("0123456789."))
    unit = _SIZE_UNITS.get(t[digits:])
    if not digits or unit is None:
        return None
    return int(float(t[:digits]) * unit)


def _cache_name(level: int, kind: str) -> str:
    return f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")


def parse_sysfs_caches(entries: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Caches of one CPU from its sysfs ``cache/index*`` files (``level``, ``type``, ``size``, ``shared_cpu_list``).

    Returns:
        ``{"L1d" | "L1i" | "L2" | "L3": {"bytes": per instance, "shared_by_cpus": logical CPUs sharing it}}``.
    """
    out = {}
    for e in entries:
        size = parse_size(e.get("size", ""))
        if size is None or not e.get("level", "").strip().isdigit():
            continue
        shared = 0
        for part in e.get("shared_cpu_list", "").strip().split(","):
            lo, _, hi = part.partition("-")
            if lo.strip().isdigit():
                shared += int(hi or lo) - int(lo) + 1
        out[_cache_name(int(e["level"]), e.get("type", "").strip())] = {"bytes": size, "shared_by_cpus": shared}
    return out


def parse_lscpu_caches(text: str) -> dict[str, dict[str, int]]:
    """Caches from plain ``lscpu`` text (``L2 cache: 4 MiB (2 instances)``): the total over the instances."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        name = key.strip().replace(" cache", "")
        if name not in ("L1d", "L1i", "L2", "L3"):
            continue
        total, _, rest = value.strip().partition("(")
        size = parse_size(total)
        instances = rest.split()[0] if rest else "1"
        if size is not None:
            n = int(instances) if instances.isdigit() and int(instances) > 0 else 1
            out[name] = {"bytes": size // n, "instances": n}
    return out


def cache_sizes(cache_dir: str | os.PathLike = CACHE_DIR) -> dict[str, dict[str, int]]:
    """This machine's caches: sysfs ``cache_dir`` first, ``lscpu`` if it is unreadable; ``{}`` if neither."""
    entries = []
    for d in sorted(Path(cache_dir).glob("index*")):
        entry = {}
        for name in ("level", "type", "size", "shared_cpu_list"):
            try:
                entry[name] = (d / name).read_text()
            except OSError:
                pass
        entries.append(entry)
    caches = parse_sysfs_caches(entries)
    if caches:
        return caches
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_lscpu_caches(text)


def cpu_info(path: str | os.PathLike = "/proc/cpuinfo", cache_dir: str | os.PathLike = CACHE_DIR) -> dict[str, Any]:
    """:func:`parse_cpuinfo` of this machine, plus ``usable_cpus`` (the CPUs this process may use),
    ``caches`` (:func:`cache_sizes`) and ``kind`` (:func:`machine_kind`).

    Without a readable ``path`` (not Linux) the vendor, flags and ISA are unknown (``None``).
    ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` in the environment are reported under
    ``isa_limits``: they cap what the libraries use, never the kind.
    """
    p = Path(path)
    try:
        info = parse_cpuinfo(p.read_text())
    except OSError:
        info = {"model": platform.processor() or None, "vendor": None, "logical_cpus": os.cpu_count(),
                "flags": {f: None for f in FLAGS_OF_INTEREST}, "bf16_hardware": None, "isa": None}
    info["usable_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["caches"] = cache_sizes(cache_dir)
    info["kind"] = machine_kind(info["vendor"], info["isa"])
    info["isa_limits"] = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    return info
