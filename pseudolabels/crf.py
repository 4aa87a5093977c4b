"""Dense-CRF refinement of softmax predictions, slice by slice (ORIGINAL_SPEC §4.3).

The fully connected CRF of Krähenbühl & Koltun (2011) minimises, per 2D slice,

    E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j),
    psi_u(x_i) = -log(clip(p_i(x_i), 1e-5)),
    k = g_w2 * exp(-|p_i - p_j|^2 / (2 g_sxy^2))
        + a_w1 * exp(-|p_i - p_j|^2 / (2 a_sxy^2) - |I_i - I_j|^2 / (2 a_srgb^2)),

with the Potts compatibility mu, by ``n_iter`` mean-field iterations; the label is argmax Q.
``p`` are pixel positions (row, column) and ``I`` the normalized grayscale intensity. The
parameters are the originals' ``para_list_fin = [a_sxy, a_srgb, a_w1, g_sxy, g_w2, n_iter]``.

``pydensecrf`` (package ``pydensecrf2``) holds the GIL during inference, so the work is spread
over CPU cores with a process pool (:func:`make_executor`); ``workers=1`` runs inline.
Measured fact (tests/test_crf.py): with the originals' a_sxy = 0.01 px every pixel is alone in
the permutohedral lattice, so the bilateral term does not vanish but becomes a self-term,
Q <- softmax(-U + g_w2 (K_g Q) + a_w1 Q) (K_g: normalized Gaussian filter), which reinforces
each pixel's current belief and makes the Gaussian smoothing more conservative (ORIGINAL_SPEC 9.3.11 calls it inert). Parameters are kept.
The spatial stds are pixels of the grid the parameters were defined on (``DatasetConfig.crf_pixel_mm``,
default the dataset's own ``target_resolution``); :meth:`CRFParams.at_pixel_size` converts them, via
millimetres, to the grid in use (DESIGN: "convert via mm for other grids").
Non-square slices are handled: the CRF is built with width = W and height = H and the
pairwise features are created from the (H, W) grid (fixes ORIGINAL_SPEC 9.3.12).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Sequence

import numpy as np

from common.errors import InputError

PARAM_NAMES = ("a_sxy", "a_srgb", "a_w1", "g_sxy", "g_w2", "n_iter")


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters of ORIGINAL_SPEC §4.3.

    Attributes:
        a_sxy: spatial std (pixels) of the bilateral (appearance) kernel.
        a_srgb: intensity std of the bilateral kernel (units of the normalized image).
        a_w1: weight (Potts compatibility) of the bilateral kernel.
        g_sxy: spatial std (pixels) of the Gaussian (smoothness) kernel.
        g_w2: weight of the Gaussian kernel.
        n_iter: number of mean-field iterations.
    """

    a_sxy: float
    a_srgb: float
    a_w1: float
    g_sxy: float
    g_w2: float
    n_iter: int

    @classmethod
    def from_sequence(cls, values: Sequence[float]) -> "CRFParams":
        """Builds parameters from ``(a_sxy, a_srgb, a_w1, g_sxy, g_w2, n_iter)``.

        Raises:
            InputError: wrong length, non-positive std, negative weight or n_iter < 1.
        """
        if isinstance(values, CRFParams):
            return values
        values = tuple(values)
        if len(values) != len(PARAM_NAMES):
            raise InputError(f"crf_params: expected 6 values {PARAM_NAMES}, got {values!r}")
        a_sxy, a_srgb, a_w1, g_sxy, g_w2, n_iter = values
        if min(a_sxy, a_srgb, g_sxy) <= 0:
            raise InputError(f"crf_params: the standard deviations must be > 0, got {values!r}")
        if min(a_w1, g_w2) < 0:
            raise InputError(f"crf_params: the kernel weights must be >= 0, got {values!r}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise InputError(f"crf_params: n_iter must be a positive integer, got {n_iter!r}")
        return cls(float(a_sxy), float(a_srgb), float(a_w1), float(g_sxy), float(g_w2), int(n_iter))

    def as_dict(self) -> dict:
        """Returns the parameters as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    def at_pixel_size(self, reference_mm: Sequence[float], grid_mm: Sequence[float]) -> "CRFParams":
        """The parameters with their spatial stds converted from pixels of size ``reference_mm`` to
        pixels of size ``grid_mm`` (in-plane ``(x, y)`` mm; the mean of the two sizes is used).

        ``sxy_grid = sxy_reference * reference_mm / grid_mm``: the same kernel in millimetres. The
        originals' parameters are in pixels of their own grid (ACDC 1.36719 mm: ``g_sxy = 10`` px =
        13.7 mm), so on a 2.5 mm grid the Gaussian kernel becomes 5.47 px; on the reference grid
        nothing changes. Intensity std, weights and iterations are not spatial and stay.

        Raises:
            InputError: a non-positive pixel size.
        """
        ref, grid = float(np.mean(reference_mm)), float(np.mean(grid_mm))
        if not (ref > 0 and grid > 0 and np.isfinite(ref) and np.isfinite(grid)):
            raise InputError(f"crf: pixel sizes must be positive mm, got reference {reference_mm!r}, grid {grid_mm!r}")
        scale = ref / grid
        return dataclasses.replace(self, a_sxy=self.a_sxy * scale, g_sxy=self.g_sxy * scale)


def crf_posterior(probs: np.ndarray, image: np.ndarray, params: CRFParams | Sequence[float]) -> np.ndarray:
    """Mean-field posterior Q of the dense CRF on one slice.

    Args:
        probs: (H, W, C) softmax probabilities.
        image: (H, W) normalized grayscale image of the same slice.
        params: CRF parameters (see :class:`CRFParams`).

    Returns:
        (H, W, C) float32 posterior after ``n_iter`` mean-field iterations.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_softmax

    params = CRFParams.from_sequence(params)
    probs = np.asarray(probs, dtype=np.float32)  # (H, W, C)
    image = np.asarray(image, dtype=np.float32)  # (H, W)
    if probs.ndim != 3 or image.shape != probs.shape[:2]:
        raise ValueError(f"crf: probs {probs.shape} must be (H, W, C) with image {image.shape} == (H, W)")
    height, width, num_classes = probs.shape
    softmax = np.ascontiguousarray(np.moveaxis(probs, -1, 0))  # (C, H, W)
    unary = np.ascontiguousarray(unary_from_softmax(softmax, clip=1e-5), dtype=np.float32)  # (C, H*W)
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(unary)
    gaussian = create_pairwise_gaussian(sdims=(params.g_sxy, params.g_sxy), shape=(height, width))  # (2, H*W)
    crf.addPairwiseEnergy(np.ascontiguousarray(gaussian, dtype=np.float32), compat=params.g_w2)
    # addPairwiseBilateral accepts only RGB uint8 images: build the grayscale features directly.
    bilateral = create_pairwise_bilateral(
        sdims=(params.a_sxy, params.a_sxy), schan=(params.a_srgb,), img=image[..., None], chdim=2
    )  # (3, H*W)
    crf.addPairwiseEnergy(np.ascontiguousarray(bilateral, dtype=np.float32), compat=params.a_w1)
    q = np.asarray(crf.inference(params.n_iter), dtype=np.float32)  # (C, H*W)
    return np.ascontiguousarray(q.T.reshape(height, width, num_classes))  # (H, W, C)


def crf_slice(probs: np.ndarray, image: np.ndarray, params: CRFParams | Sequence[float]) -> np.ndarray:
    """Refines one slice's softmax with the dense CRF.

    Args:
        probs: (H, W, C) softmax probabilities.
        image: (H, W) normalized grayscale image of the same slice.
        params: CRF parameters (see :class:`CRFParams`).

    Returns:
        (H, W) int16 labels, argmax of the mean-field posterior Q.
    """
    return np.argmax(crf_posterior(probs, image, params), axis=-1).astype(np.int16)  # (H, W)


def _crf_block(probs: np.ndarray, image: np.ndarray, params: CRFParams) -> np.ndarray:
    """Runs :func:`crf_slice` over a block of slices (worker entry point, must be picklable)."""
    return np.stack([crf_slice(p, i, params) for p, i in zip(probs, image)], axis=0)  # (d, H, W)


def resolve_workers(workers: int | None) -> int:
    """Number of CRF worker processes: ``None`` or 0 means every CPU core this process may use."""
    if workers is None or workers == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    if int(workers) != workers or workers < 1:
        raise InputError(f"workers: expected a positive integer (0 = all cores), got {workers!r}")
    return int(workers)


def make_executor(workers: int, start_method: str | None = None) -> ProcessPoolExecutor:
    """Creates the process pool used by :func:`crf_volume`.

    On Linux the default start method is ``fork``: workers start instantly and need only NumPy
    and pydensecrf (they never touch TensorFlow, so forking a process that has TensorFlow loaded
    is safe for this use). Elsewhere ``spawn`` is used. ``start_method`` overrides the choice.

    Args:
        workers: number of processes (>= 1).
        start_method: optional multiprocessing start method.

    Returns:
        A ``concurrent.futures.ProcessPoolExecutor``; close it with ``shutdown()`` or ``with``.
    """
    if start_method is None:
        available = multiprocessing.get_all_start_methods()
        start_method = "fork" if sys.platform.startswith("linux") and "fork" in available else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method))


def crf_volume(
    probs: np.ndarray,
    image: np.ndarray,
    params: CRFParams | Sequence[float],
    *,
    workers: int | None = 1,
    executor: Executor | None = None,
    blocks: int | None = None,
) -> np.ndarray:
    """Refines a volume's softmax with the dense CRF, one 2D slice at a time.

    Args:
        probs: (D, H, W, C) softmax probabilities.
        image: (D, H, W) normalized image.
        params: CRF parameters (:class:`CRFParams` or the 6-tuple of ``DatasetConfig.crf_params``).
        workers: processes to use when no ``executor`` is given (1 = inline; ``None`` = all cores).
        executor: an existing pool (e.g. from :func:`make_executor`) reused across volumes.
        blocks: with ``executor``, the number of contiguous slice blocks submitted (default: the
            pool's worker count), at most one per slice.

    Returns:
        (D, H, W) int16 labels.
    """
    params = CRFParams.from_sequence(params)
    probs = np.asarray(probs, dtype=np.float32)  # (D, H, W, C)
    image = np.asarray(image, dtype=np.float32)  # (D, H, W)
    if probs.ndim != 4 or image.shape != probs.shape[:3]:
        raise ValueError(f"crf_volume: probs {probs.shape} must be (D, H, W, C) with image {image.shape} == (D, H, W)")
    depth = probs.shape[0]
    if depth == 0:
        return np.zeros(probs.shape[:3], np.int16)
    if executor is None:
        n_workers = min(resolve_workers(workers), depth)
        if n_workers == 1:
            return _crf_block(probs, image, params)
        with make_executor(n_workers) as pool:
            return crf_volume(probs, image, params, executor=pool, blocks=n_workers)
    n_blocks = min(depth, max(1, int(blocks or getattr(executor, "_max_workers", 1))))
    bounds = np.linspace(0, depth, n_blocks + 1).round().astype(int)
    futures = [
        executor.submit(_crf_block, probs[lo:hi], image[lo:hi], params)
        for lo, hi in zip(bounds[:-1], bounds[1:])
        if hi > lo
    ]
    return np.concatenate([f.result() for f in futures], axis=0)  # (D, H, W)
