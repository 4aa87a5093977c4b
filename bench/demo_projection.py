"""Estimate of the wall time of ``make demo`` on this machine from measured 64x64 step times.

``make demo`` (default ``DEMO_METHODS=baseline,plc,plc_plus``) runs the baseline stage, two pseudo-label
stages (with and without the CRF), two joint stages (PLC, PLC+) and the evaluations with the ``demo`` preset of
``training.pipeline.PRESETS`` at 64x64. Its training steps are what the benchmark measures; the
rest (one process per stage: TensorFlow import and step tracing; validation every ``val_every``
steps; pseudo-labels; test evaluation; export; data generation and preprocessing) is a fixed
overhead passed in, not measured by the benchmark.
"""
from __future__ import annotations

from typing import Any, Mapping

# Non-step seconds of ``make demo`` (setup excluded), measured on an AMD EPYC with AVX-512 (2 cores, fp32
# matmul 180 GFLOP/s): wall time 231 s minus its training steps (150 baseline steps x 0.22 s + 120
# joint steps x 0.53 s, the 64x64 step times of ``bench.training`` on that machine) = 134 s: TensorFlow
# start, tracing, validation, pseudo-labels, evaluation, export, data generation and preprocessing.
# Scales with machine speed, so on a slower machine kind it underestimates.
DEMO_OVERHEAD_S = 134.0


def project_demo_seconds(step_times: Mapping[str, float], preset: Mapping[str, int],
                         overhead_s: float, joint_runs: int = 1) -> dict[str, Any]:
    """Projected ``make demo`` seconds: training steps from measured step times plus a fixed overhead.

    ``baseline_iters * baseline_step_s + joint_runs * joint_rounds * joint_iters_per_round *
    joint_step_s + overhead_s`` (``make demo`` runs two joint stages, PLC and PLC+: ``joint_runs=2``).

    Args:
        step_times: measured 64x64 step times, ``{"baseline_step_s": s, "joint_step_s": s}``
            (the 20-image baseline step and the 40-image joint step of ``bench.training``).
        preset: iteration settings, e.g. ``training.pipeline.PRESETS["demo"]`` (``baseline_iters``,
            ``joint_rounds``, ``joint_iters_per_round``, ``val_every``).
        overhead_s: non-step seconds (default of ``bench.training``: :data:`DEMO_OVERHEAD_S`, the
            non-step time of ``make demo`` measured on an AMD EPYC with AVX-512); it includes the
            validations.

    Returns:
        ``{"total_s", "baseline_steps_s", "joint_steps_s", "overhead_s", "baseline_iters",
        "joint_iters", "validations"}`` (``validations``: validation passes of both stages, every
        ``val_every`` steps; counted for information, their time is part of ``overhead_s``).
    """
    joint_iters = int(joint_runs) * preset["joint_rounds"] * preset["joint_iters_per_round"]
    baseline_s = preset["baseline_iters"] * step_times["baseline_step_s"]
    joint_s = joint_iters * step_times["joint_step_s"]
    val_every = preset.get("val_every") or 0
    validations = (preset["baseline_iters"] // val_every + joint_iters // val_every) if val_every > 0 else 0
    return {"total_s": baseline_s + joint_s + overhead_s, "baseline_steps_s": baseline_s, "joint_steps_s": joint_s,
            "overhead_s": overhead_s, "baseline_iters": preset["baseline_iters"], "joint_iters": joint_iters,
            "validations": validations}
