"""bench.cpu_info: CPU model, flags, ISA level, kind and caches from /proc/cpuinfo, sysfs and lscpu text fixtures."""
from __future__ import annotations

from bench.cpu_info import (FLAGS_OF_INTEREST, KINDS, cache_sizes, cpu_info, isa_level, machine_kind, parse_cpuinfo,
                            parse_lscpu_caches, parse_size, parse_sysfs_caches)

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
    info = cpu_info(tmp_path / "missing", tmp_path / "no_cache")
    assert info["flags"] == {f: None for f in FLAGS_OF_INTEREST} and info["bf16_hardware"] is None
    assert info["isa"] is None and info["kind"] == "unknown"
    assert info["usable_cpus"] >= 1


EPYC_AVX512 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16
"""
EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
INTEL_AMX = SAPPHIRE.replace("processor\t: 0\n", "processor\t: 0\nvendor_id\t: GenuineIntel\n", 1)


def test_isa_and_kind_of_the_three_kinds():
    assert [(i["isa"], machine_kind(i["vendor"], i["isa"])) for i in map(parse_cpuinfo, (INTEL_AMX, EPYC_AVX512,
                                                                                       EPYC_AVX2))] == [
        ("avx512+amx", "Intel Xeon AVX-512/AMX"), ("avx512", "AMD EPYC AVX-512"), ("avx2", "AMD EPYC AVX2-only")]
    assert list(KINDS) == ["Intel Xeon AVX-512/AMX", "AMD EPYC AVX-512", "AMD EPYC AVX2-only"]
    assert parse_cpuinfo(EPYC)["vendor"] is None and machine_kind(None, "avx2") == "unknown"
    assert machine_kind("GenuineIntel", "avx2") == "other (GenuineIntel, avx2)"
    assert isa_level({"avx2": False, "avx512f": False}) == "pre-avx2" and isa_level({"avx2": None}) is None


def test_parse_size_units():
    assert [parse_size(t) for t in ("48K", "2048K", "96 KiB", "4 MiB", "480 MiB", "1.5 MiB", "12", "x", "")] == [
        48 * 1024, 2 * 1024 ** 2, 96 * 1024, 4 * 1024 ** 2, 480 * 1024 ** 2, 3 * 512 * 1024, 12, None, None]


def _sysfs(root, entries):
    for i, (level, kind, size, shared) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{value}\n")
    return root


def test_sysfs_caches_of_an_epyc_rome_fixture(tmp_path):
    root = _sysfs(tmp_path / "cache", [(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"),
                                       (2, "Unified", "512K", "0"), (3, "Unified", "16384K", "0-1")])
    assert cache_sizes(root) == {"L1d": {"bytes": 32768, "shared_by_cpus": 1},
                                 "L1i": {"bytes": 32768, "shared_by_cpus": 1},
                                 "L2": {"bytes": 524288, "shared_by_cpus": 1},
                                 "L3": {"bytes": 16 * 1024 ** 2, "shared_by_cpus": 2}}
    assert parse_sysfs_caches([{"level": "3", "type": "Unified", "size": "32768K", "shared_cpu_list": "0-3,8,10-11"}]) \
        == {"L3": {"bytes": 32 * 1024 ** 2, "shared_by_cpus": 7}}
    assert parse_sysfs_caches([{"level": "x", "size": "1K"}, {"level": "2"}]) == {}


def test_lscpu_caches_are_per_instance():
    text = ("Model name:   Intel(R) Xeon(R) Processor\nL1d cache:    96 KiB (2 instances)\n"
            "L1i cache:    128 KiB (2 instances)\nL2 cache:     4 MiB (2 instances)\n"
            "L3 cache:     480 MiB (1 instance)\nNUMA node(s): 1\n")
    assert parse_lscpu_caches(text) == {"L1d": {"bytes": 48 * 1024, "instances": 2},
                                        "L1i": {"bytes": 64 * 1024, "instances": 2},
                                        "L2": {"bytes": 2 * 1024 ** 2, "instances": 2},
                                        "L3": {"bytes": 480 * 1024 ** 2, "instances": 1}}
    assert parse_lscpu_caches("L2 cache: 512 KiB\n") == {"L2": {"bytes": 512 * 1024, "instances": 1}}


def test_cpu_info_of_fixture_files_names_the_kind_and_isa_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    (tmp_path / "cpuinfo").write_text(EPYC_AVX2)
    root = _sysfs(tmp_path / "cache", [(2, "Unified", "512K", "0")])
    info = cpu_info(tmp_path / "cpuinfo", root)
    assert info["kind"] == "AMD EPYC AVX2-only" and info["isa"] == "avx2" and info["vendor"] == "AuthenticAMD"
    assert info["caches"] == {"L2": {"bytes": 524288, "shared_by_cpus": 1}}
    assert info["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # a cap on the libraries, not the kind
