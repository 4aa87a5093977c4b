"""bench.cpu_info: CPU model and mixed-precision flags from /proc/cpuinfo text."""
from __future__ import annotations

from bench.cpu_info import FLAGS_OF_INTEREST, cpu_info, parse_cpuinfo

SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 avx512_fp16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16 avx512_fp16
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_parse_intel_with_amx():
    info = parse_cpuinfo(SAPPHIRE)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+" and info["logical_cpus"] == 2
    assert info["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_tile": True,
                             "amx_bf16": True, "avx512_fp16": True, "amx_fp16": False}
    assert info["bf16_hardware"] is True


def test_parse_avx2_only_has_no_bf16_hardware():
    info = parse_cpuinfo(EPYC)
    assert info["model"] == "AMD EPYC 7B12" and info["flags"]["avx2"] and not info["flags"]["avx512f"]
    assert info["bf16_hardware"] is False


def test_unreadable_cpuinfo_reports_unknown_flags(tmp_path):
    info = cpu_info(tmp_path / "missing")
    assert info["flags"] == {f: None for f in FLAGS_OF_INTEREST} and info["bf16_hardware"] is None
    assert info["usable_cpus"] >= 1
