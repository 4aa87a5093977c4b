"""Matrix-multiply peak of this machine: the yardstick that tells machine kinds apart.

The project's CPU machines differ ~5x in speed (Intel Xeon with AVX-512 / AMX vs AVX2-only AMD
EPYC); a step time means little without the machine's dense fp32 throughput beside it.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import tensorflow as tf


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """GFLOP/s of one ``n x n`` by ``n x n`` ``tf.linalg.matmul`` on the default device.

    Two warm-up products, then the median of ``repeats`` timed ones; each product is pulled to the
    host inside the timed region (synchronizes asynchronous devices). Counts ``2 * n**3`` flops.

    Args:
        n: matrix side.
        repeats: timed products.
        dtype: TensorFlow dtype name of both operands.

    Returns:
        ``{"n": n, "gflops": float, "dtype": dtype, "device": str}`` (``device``: where the product ran).
    """
    rng = np.random.default_rng(0)
    a = tf.constant(rng.random((n, n)), dtype)  # (n, n)
    b = tf.constant(rng.random((n, n)), dtype)  # (n, n)
    for _ in range(2):
        np.asarray(tf.linalg.matmul(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        c = tf.linalg.matmul(a, b)  # (n, n)
        np.asarray(c)
        times.append(time.perf_counter() - t0)
    return {"n": n, "gflops": 2 * n ** 3 / statistics.median(times) / 1e9, "dtype": dtype, "device": c.device}
