"""Timing helper shared by the benchmarks."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls.

    Outputs are pulled to the host (``np.asarray`` on every tensor) so that asynchronous
    devices are synchronized inside the timed region.
    """
    for _ in range(warmup):
        tf.nest.map_structure(np.asarray, fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(np.asarray, fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
