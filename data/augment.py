"""Batched data augmentations as TensorFlow ops (ORIGINAL_SPEC §5.5 and §3.2 ``crop_batch``).

Every function works on whole batches, runs inside ``tf.data`` and ``tf.function``, and takes its
randomness from an explicit stateless ``seed``: a ``(2,)`` int32/int64 tensor (or a pair of ints) fed to
``tf.random.stateless_*``. The same seed gives the same result on every call and machine.

The geometric conventions follow the original NumPy/SciPy/scikit-image code, so a fixed draw gives
the same image as the reference implementation (see ``tests/test_augment.py``):

* ``affine_augment``  ~ ``scipy.ndimage.rotate(reshape=False, axes=(1, 0))`` and
  ``skimage.transform.rescale`` + centre crop/pad, ``np.fliplr``; one of five options per image.
* ``random_deformation`` ~ ``skimage.transform.resize(order=3, mode='reflect')`` of a 3x3 Gaussian grid and
  ``tf.contrib.image.dense_image_warp`` (bilinear, query points clamped to the border).
* ``brightness_contrast`` / ``intensity_contrast_brightness`` ~ ``tf.image.random_brightness`` /
  ``random_contrast`` with ``seed=1`` in TF 1 graphs: one uniform ``u`` per call drives both parameters.
* ``crop_and_resize`` ~ ``utils.crop_batch`` with ``skimage.transform.resize(order=1, mode='reflect')``.

Pixel coordinates: integer coordinates are pixel centres, ``x`` is the column and ``y`` the row.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from common.errors import InputError

SeedLike = tf.Tensor | Sequence[int]

# Original crop_batch defaults (§3.2): top-left offsets ~ randint[10, 70), 100 rows x 100 columns.
CROP_OFFSET_RANGE = (10, 70)
CROP_BOX = 100


# ----------------------------------------------------------------------------------------------
# seeds and shapes
# ----------------------------------------------------------------------------------------------
def as_seed(seed: SeedLike) -> tf.Tensor:
    """Return ``seed`` as a ``(2,)`` int64 tensor usable by ``tf.random.stateless_*``."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        raise InputError(f"seed: expected an integer (2,) tensor, got dtype {seed.dtype.name}")
    seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return tf.reshape(seed, [2])


def split_seed(seed: SeedLike, num: int) -> list[tf.Tensor]:
    """Split one stateless seed into ``num`` independent ``(2,)`` seeds."""
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), num))


def _static_hw(images: tf.Tensor, name: str) -> tuple[int, int]:
    """Static (H, W) of a ``(N, H, W, C)`` tensor; raise if unknown (the ops need static sizes)."""
    shape = images.shape
    if shape.rank != 4:
        raise InputError(f"{name}: expected a (N, H, W, C) tensor, got shape {shape}")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        raise InputError(f"{name}: image height and width must be static, got shape {shape}")
    return int(h), int(w)


def _uniform(seed: tf.Tensor, shape, lo: float, hi: float, dtype=tf.float32) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi, dtype=dtype)


def _randint(seed: tf.Tensor, shape, lo: int, hi: int) -> tf.Tensor:
    """Integers uniform in ``[lo, hi)`` (like ``np.random.randint(lo, hi)``)."""
    return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi, dtype=tf.int32)


# ----------------------------------------------------------------------------------------------
# §5.5.1 affine augmentation
# ----------------------------------------------------------------------------------------------
def apply_transforms(images: tf.Tensor, transforms: tf.Tensor, interpolation: str) -> tf.Tensor:
    """Resample ``images`` (N, H, W, C) float32 at ``transform(output pixel)`` with constant 0 fill.

    ``transforms`` (N, 8) maps output (x, y) to input ``((a0 x + a1 y + a2), (b0 x + b1 y + b2))``.
    Points outside the image read 0 and bilinear weights mix them in (scipy's 'grid-constant').
    """
    h, w = _static_hw(images, "images")
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.constant([h, w], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )


def rotation_transforms(angle_deg: tf.Tensor, h: int, w: int, exact45: bool = False) -> tf.Tensor:
    """Output->input transforms of ``scipy.ndimage.rotate(img, angle, axes=(1, 0), reshape=False)``.

    Rotation about the centre ``((W-1)/2, (H-1)/2)``; an output point ``(x, y)`` reads the input at
    ``x_in = c (x-cx) - s (y-cy) + cx``, ``y_in = s (x-cx) + c (y-cy) + cy`` with ``c, s = cos, sin(angle)``.

    Args:
        angle_deg: (N,) angles in degrees (float64).
        h, w: image size.
        exact45: the angles are multiples of 45 degrees; use exact cos/sin values so that multiples
            of 90 degrees are exact pixel permutations.

    Returns:
        (N, 8) float64 transforms.
    """
    angle_deg = tf.cast(angle_deg, tf.float64)
    if exact45:
        r = math.sqrt(0.5)
        cos_tab = tf.constant([1.0, r, 0.0, -r, -1.0, -r, 0.0, r], tf.float64)
        sin_tab = tf.constant([0.0, r, 1.0, r, 0.0, -r, -1.0, -r], tf.float64)
        k = tf.math.floormod(tf.cast(tf.round(angle_deg / 45.0), tf.int32), 8)  # (N,)
        c, s = tf.gather(cos_tab, k), tf.gather(sin_tab, k)
    else:
        rad = angle_deg * (math.pi / 180.0)
        c, s = tf.cos(rad), tf.sin(rad)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    zeros = tf.zeros_like(c)
    return tf.stack(
        [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, zeros, zeros], axis=1
    )  # (N, 8)


def scale_transforms(scale: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """Transforms of ``skimage.transform.rescale(img, scale)`` followed by a centre crop/pad to (h, w).

    rescale gives ``Lr = max(round(scale * L), 1)`` pixels per axis (round half to even) sampled at
    ``in = (r + 0.5) L / Lr - 0.5``; ``crop_or_pad_slice_to_size`` then keeps rows
    ``r = o + (Lr - L) // 2`` (crop) or ``r = o - (L - Lr) // 2`` (pad, zeros outside). Both steps are
    one affine map per axis, so the pair is a single resampling (no intermediate rounding).

    Args:
        scale: (N,) float64 scale factors.
        h, w: image size.

    Returns:
        (N, 8) float64 transforms.
    """
    scale = tf.cast(scale, tf.float64)

    def axis(length: int):
        lr = tf.maximum(tf.round(scale * length), 1.0)  # (N,) tf.round is half-to-even like np.round
        off = tf.where(lr > length, tf.math.floordiv(lr - length, 2.0), -tf.math.floordiv(length - lr, 2.0))
        k = length / lr
        return k, (off + 0.5) * k - 0.5

    kx, tx = axis(w)
    ky, ty = axis(h)
    zeros = tf.zeros_like(kx)
    return tf.stack([kx, zeros, tx, zeros, ky, ty, zeros, zeros], axis=1)  # (N, 8)


def fliplr_transforms(flip: tf.Tensor, w: int) -> tf.Tensor:
    """Transforms of ``np.fliplr`` where ``flip`` (N,) bool is true, identity elsewhere."""
    sign = tf.where(flip, -1.0, 1.0)
    sign = tf.cast(sign, tf.float64)
    tx = tf.where(flip, tf.constant(w - 1.0, tf.float64), tf.constant(0.0, tf.float64))
    zeros, ones = tf.zeros_like(sign), tf.ones_like(sign)
    return tf.stack([sign, zeros, tx, zeros, ones, zeros, zeros, zeros], axis=1)  # (N, 8)


def affine_draws(seed: SeedLike, n: tf.Tensor | int) -> dict[str, tf.Tensor]:
    """Per-image random draws of ``affine_augment`` (exposed so tests can rebuild the references).

    Returns a dict of (n,) tensors: ``option`` in 0..4 (0 rotation, 1 scale, 2 flip, 3 k*45 rotation,
    4 none), ``angle`` U(-15, 15) degrees, ``scale`` round(U(0.95, 1.05), 2), ``flip`` (coin == 0 of
    a fair coin, i.e. the flip option flips with probability 1/2), ``k`` in 0..7.
    """
    s = split_seed(seed, 5)
    option = _randint(s[0], [n], 0, 5)
    angle = _uniform(s[1], [n], -15.0, 15.0, tf.float64)
    scale = tf.round(_uniform(s[2], [n], 0.95, 1.05, tf.float64) * 100.0) / 100.0
    flip = tf.equal(_randint(s[3], [n], 0, 2), 0)
    k = _randint(s[4], [n], 0, 8)
    return {"option": option, "angle": angle, "scale": scale, "flip": flip, "k": k}


def affine_transforms(draws: dict[str, tf.Tensor], active: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """(N, 8) transforms selected per image from ``draws``; images with ``active`` false keep identity."""
    n = tf.shape(draws["option"])[0]
    identity = tf.tile(tf.constant([[1.0, 0, 0, 0, 1.0, 0, 0, 0]], tf.float64), [n, 1])
    candidates = tf.stack(
        [
            rotation_transforms(draws["angle"], h, w),
            scale_transforms(draws["scale"], h, w),
            fliplr_transforms(draws["flip"], w),
            rotation_transforms(tf.cast(draws["k"], tf.float64) * 45.0, h, w, exact45=True),
            identity,
        ],
        axis=1,
    )  # (N, 5, 8)
    option = tf.where(active, draws["option"], 4)  # (N,)
    return tf.gather(candidates, option, batch_dims=1)  # (N, 8)


def affine_augment(images: tf.Tensor, labels: tf.Tensor, seed: SeedLike) -> tuple[tf.Tensor, tf.Tensor]:
    """Random affine augmentation of ORIGINAL_SPEC §5.5.1, one independent choice per image.

    Per image, with probability 1/5 each: rotation by U(-15, 15) degrees; isotropic rescale by
    ``round(U(0.95, 1.05), 2)`` then centre crop/pad to the original size; left-right flip with
    probability 1/2; rotation by ``k * 45`` degrees, ``k ~ U{0..7}``; nothing. Images are resampled
    bilinearly (order 1), labels with nearest neighbour (order 0), constant 0 outside. An image whose
    maximum is ``<= 0.001`` is left unchanged. Rescaled images are clipped to their input range as
    skimage does. Differences from the SciPy/skimage references are confined to the one-pixel ring
    where a source point lies within 1 px outside the image (TF blends with the 0 fill, ``ndimage.rotate``
    returns 0) and to nearest-neighbour rounding ties of the labels (about 1% of pixels at 45 degrees).

    Args:
        images: (N, H, W, 1) float32.
        labels: (N, H, W) integer label maps.
        seed: (2,) stateless seed.

    Returns:
        ``(images (N, H, W, 1) float32, labels (N, H, W) int32)``.
    """
    images = tf.convert_to_tensor(images, tf.float32)  # (N, H, W, 1)
    h, w = _static_hw(images, "affine_augment images")
    labels = tf.convert_to_tensor(labels)
    n = tf.shape(images)[0]
    draws = affine_draws(seed, n)
    active = tf.reduce_max(images, axis=[1, 2, 3]) > 0.001  # (N,)
    transforms = affine_transforms(draws, active, h, w)  # (N, 8)
    out_images = apply_transforms(images, transforms, "BILINEAR")  # (N, H, W, 1)
    # skimage.rescale (clip=True default) clips its output to the input range, keeping the 0 fill
    # where 0 lies outside that range; only the rescale option goes through skimage.
    lo = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)  # (N, 1, 1, 1)
    hi = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    clipped = tf.clip_by_value(out_images, lo, hi)
    keep_fill = (out_images == 0.0) & ((lo > 0.0) | (hi < 0.0))
    clipped = tf.where(keep_fill, out_images, clipped)
    is_scale = (active & tf.equal(draws["option"], 1))[:, None, None, None]  # (N, 1, 1, 1)
    out_images = tf.where(is_scale, clipped, out_images)
    lab = tf.cast(labels, tf.float32)[..., None]  # (N, H, W, 1)
    out_labels = apply_transforms(lab, transforms, "NEAREST")[..., 0]  # (N, H, W)
    return out_images, tf.cast(tf.round(out_labels), tf.int32)


# ----------------------------------------------------------------------------------------------
# §5.5.2 random deformation
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def cubic_upsampling_operator(h: int, w: int) -> np.ndarray:
    """Linear operator of ``skimage.transform.resize(grid (3,3), (h, w), order=3, mode='reflect')``.

    ``resize`` without clipping is linear in its input, so resizing the 9 basis grids once gives the
    exact operator: ``resize(g) = sum_k g.flat[k] * op[k]``. (The clip to the input range that
    resize applies by default is not linear; ``random_deformation`` applies it separately.)

    Returns:
        (9, h, w) float32 array.
    """
    from skimage.transform import resize  # imported lazily: only needed once per shape

    basis = np.eye(9, dtype=np.float64).reshape(9, 3, 3)
    op = np.stack(
        [resize(b, (h, w), order=3, mode="reflect", clip=False, anti_aliasing=False) for b in basis]
    )
    return op.astype(np.float32)


def deformation_grids(seed: SeedLike, n: tf.Tensor | int, sigma: float = 5.0) -> tf.Tensor:
    """Per image two 3x3 grids (dx, dy) of N(0, sigma^2) pixel displacements: (n, 2, 9) float32."""
    return tf.random.stateless_normal([n, 2, 9], as_seed(seed), stddev=sigma, dtype=tf.float32)


def flow_from_grids(grids: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """Upsample (N, 2, 9) grids to (N, h, w, 2) flows like ``utils.calc_deform`` (§5.5.2).

    Each 3x3 grid is resized with ``skimage.transform.resize(order=3, mode='reflect')`` including its
    default clip of the output to the grid's min/max: a fixed linear operator then a clip.
    """
    grids = tf.convert_to_tensor(grids, tf.float32)  # (N, 2, 9)
    op = tf.constant(cubic_upsampling_operator(h, w).reshape(9, h * w))  # (9, H*W)
    flow = tf.matmul(tf.reshape(grids, [-1, 9]), op)  # (N*2, H*W); a plain matmul is ~10x faster than einsum here
    flow = tf.transpose(tf.reshape(flow, [-1, 2, h, w]), [0, 2, 3, 1])  # (N, H, W, 2)
    lo = tf.reduce_min(grids, axis=2)[:, None, None, :]  # (N, 1, 1, 2)
    hi = tf.reduce_max(grids, axis=2)[:, None, None, :]  # (N, 1, 1, 2)
    return tf.clip_by_value(flow, lo, hi)


def deformation_flow(seed: SeedLike, n: tf.Tensor | int, h: int, w: int, sigma: float = 5.0) -> tf.Tensor:
    """Smooth random flow fields of ``utils.calc_deform`` (§5.5.2).

    Returns:
        (n, h, w, 2) float32 flow; channel 0 (dx) displaces rows, channel 1 (dy) columns.
    """
    return flow_from_grids(deformation_grids(seed, n, sigma), h, w)


def dense_image_warp(image: tf.Tensor, flow: tf.Tensor) -> tf.Tensor:
    """Bilinear warp with the semantics of ``tf.contrib.image.dense_image_warp`` / TF-Addons.

    ``out[n, y, x] = image[n, y - flow[n, y, x, 0], x - flow[n, y, x, 1]]``; the lower interpolation
    corner is clamped to ``[0, size-2]`` and the weight to ``[0, 1]``, so query points outside the
    image read the border pixels.

    Args:
        image: (N, H, W, C) float32, H, W >= 2.
        flow: (N, H, W, 2) float32.

    Returns:
        (N, H, W, C) float32.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    h, w = _static_hw(image, "dense_image_warp image")
    if h < 2 or w < 2:
        raise InputError(f"dense_image_warp: image must be at least 2x2, got {h}x{w}")
    n = tf.shape(image)[0]
    c = tf.shape(image)[3]
    gy, gx = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")  # (H, W)
    qy = gy[None] - flow[..., 0]  # (N, H, W)
    qx = gx[None] - flow[..., 1]  # (N, H, W)
    fy = tf.clip_by_value(tf.floor(qy), 0.0, h - 2.0)
    fx = tf.clip_by_value(tf.floor(qx), 0.0, w - 2.0)
    ay = tf.clip_by_value(qy - fy, 0.0, 1.0)[..., None]  # (N, H, W, 1)
    ax = tf.clip_by_value(qx - fx, 0.0, 1.0)[..., None]  # (N, H, W, 1)
    base = (tf.range(n) * (h * w))[:, None, None]  # (N, 1, 1)
    top_left = base + tf.cast(fy, tf.int32) * w + tf.cast(fx, tf.int32)  # (N, H, W)
    flat = tf.reshape(image, [-1, c])  # (N*H*W, C)
    tl = tf.gather(flat, top_left)  # (N, H, W, C)
    tr = tf.gather(flat, top_left + 1)
    bl = tf.gather(flat, top_left + w)
    br = tf.gather(flat, top_left + w + 1)
    top = ax * (tr - tl) + tl
    bottom = ax * (br - bl) + bl
    return ay * (bottom - top) + top  # (N, H, W, C)


def intensity_draw(seed: SeedLike) -> tf.Tensor:
    """The single ``u ~ U(0, 1)`` shared by brightness and contrast in one intensity call."""
    return _uniform(as_seed(seed), [], 0.0, 1.0)


def intensity_contrast_brightness(images: tf.Tensor, seed: SeedLike) -> tf.Tensor:
    """``models.contrast_net`` (§5.5.2, used with ``--ri_en``): one uniform draw ``u`` per call.

    The first ``N // 2`` images get contrast ``(x - mean_hw x) * f + mean_hw x`` with ``f = 0.8 + 0.4 u``,
    the others brightness ``x + delta`` with ``delta = -0.1 + 0.2 u``; no clipping.

    Args:
        images: (N, H, W, 1) float32.
        seed: (2,) stateless seed.

    Returns:
        (N, H, W, 1) float32.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    u = intensity_draw(seed)
    factor, delta = 0.8 + 0.4 * u, -0.1 + 0.2 * u
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)  # (N, 1, 1, 1)
    contrast = (images - mean) * factor + mean
    n = tf.shape(images)[0]
    first_half = (tf.range(n) < n // 2)[:, None, None, None]  # (N, 1, 1, 1)
    return tf.where(first_half, contrast, images + delta)


def mix_count(seed: SeedLike, n: tf.Tensor | int) -> tf.Tensor:
    """``no_orig ~ randint(1, N-1)``: how many leading images keep the affine-only version (rd_ni=1).

    For N = 20 this is 1..18 as in the original; for N < 3 it is 1.
    """
    n = tf.convert_to_tensor(n, tf.int32)
    hi = tf.maximum(n - 1, 2)
    return tf.random.stateless_uniform([], as_seed(seed), minval=1, maxval=hi, dtype=tf.int32)


def random_deformation(
    images: tf.Tensor,
    onehot: tf.Tensor,
    seed: SeedLike,
    sigma: float = 5.0,
    mix: bool = True,
    intensity: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random smooth deformation of §5.5.2 (``create_rand_augs`` with ``rd_en=1``).

    Images and one-hot labels are warped by the same flow (``deformation_flow``), so warped labels
    are soft (each pixel still sums to 1). With ``mix`` (``rd_ni=1``, the original default) a batch
    draw ``no_orig ~ randint(1, N-1)`` keeps images ``[:no_orig]`` unchanged (hard labels) and replaces
    ``[no_orig:]`` by their deformed versions; without ``mix`` every image is deformed.
    With ``intensity`` (the intended ``--ri_en`` behaviour, unreachable in the release, bug 9.1.3)
    ``intensity_contrast_brightness`` is applied to the deformed batch before mixing.

    Args:
        images: (N, H, W, 1) float32.
        onehot: (N, H, W, C) float32 one-hot labels.
        seed: (2,) stateless seed.
        sigma: standard deviation of the grid displacements in pixels (``--sigma``).
        mix: apply the ``rd_ni`` mixing.
        intensity: apply ``contrast_net`` to the deformed images.

    Returns:
        ``(images (N, H, W, 1), labels (N, H, W, C))`` float32.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    onehot = tf.convert_to_tensor(onehot, tf.float32)
    h, w = _static_hw(images, "random_deformation images")
    s_flow, s_mix, s_int = split_seed(seed, 3)
    n = tf.shape(images)[0]
    flow = deformation_flow(s_flow, n, h, w, sigma)  # (N, H, W, 2)
    warped = dense_image_warp(tf.concat([images, onehot], axis=-1), flow)  # (N, H, W, 1+C)
    new_images, new_labels = warped[..., :1], warped[..., 1:]
    if intensity:
        new_images = intensity_contrast_brightness(new_images, s_int)
    if not mix:
        return new_images, new_labels
    return mix_batches(images, onehot, new_images, new_labels, s_mix)


def mix_batches(
    images: tf.Tensor, labels: tf.Tensor, new_images: tf.Tensor, new_labels: tf.Tensor, seed: SeedLike
) -> tuple[tf.Tensor, tf.Tensor]:
    """``rd_ni`` mixing: rows ``[:no_orig]`` from the first pair, ``[no_orig:]`` from the second.

    ``no_orig = mix_count(seed, N)``.
    """
    n = tf.shape(images)[0]
    keep = tf.range(n) < mix_count(seed, n)  # (N,)
    keep = keep[:, None, None, None]
    return tf.where(keep, images, new_images), tf.where(keep, labels, new_labels)


# ----------------------------------------------------------------------------------------------
# §5.5.3 intensity for the contrastive stages
# ----------------------------------------------------------------------------------------------
def brightness_contrast(images: tf.Tensor, seed: SeedLike) -> tf.Tensor:
    """``models.brit_cont_net``: ``clip(contrast(x + delta, f), 0, 1.5)``, one draw for the batch.

    ``delta = -0.3 + 0.6 u`` and ``f = 0.7 + 0.6 u`` share the same ``u ~ U(0, 1)`` (TF 1 ops with
    ``seed=1`` and no graph seed consume the same stream); ``contrast(y, f) = (y - mean_hw y) f + mean_hw y``
    per image.

    Args:
        images: (N, H, W, 1) float32.
        seed: (2,) stateless seed.

    Returns:
        (N, H, W, 1) float32 in [0, 1.5].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    u = intensity_draw(seed)
    delta, factor = -0.3 + 0.6 * u, 0.7 + 0.6 * u
    bright = images + delta  # (N, H, W, 1)
    mean = tf.reduce_mean(bright, axis=[1, 2], keepdims=True)  # (N, 1, 1, 1)
    return tf.clip_by_value((bright - mean) * factor + mean, 0.0, 1.5)


# ----------------------------------------------------------------------------------------------
# §3.2 crop_batch
# ----------------------------------------------------------------------------------------------
def crop_params_for_size(h: int, w: int, reference: int = 192) -> dict[str, object]:
    """Original crop parameters scaled from a ``reference``-pixel image to an (h, w) image.

    Useful for small images (e.g. 64x64 tests, the synthetic dataset); at 192 it returns the
    originals ``offset_range=(10, 70), bbox_dim=100, bbox_dim_y=100``.
    """
    fh, fw = h / reference, w / reference
    lo = max(int(round(CROP_OFFSET_RANGE[0] * min(fh, fw))), 0)
    hi = max(int(round(CROP_OFFSET_RANGE[1] * min(fh, fw))), lo + 1)
    return {
        "offset_range": (lo, hi),
        "bbox_dim": max(int(round(CROP_BOX * fh)), 1),
        "bbox_dim_y": max(int(round(CROP_BOX * fw)), 1),
    }


def check_crop_params(
    h: int, w: int, bbox_dim: int, bbox_dim_y: int, offset_range: tuple[int, int]
) -> None:
    """Raise ``InputError`` unless every crop drawn with these parameters is non-empty on (h, w)."""
    lo, hi = int(offset_range[0]), int(offset_range[1])
    if not 0 <= lo < hi or hi - 1 >= min(h, w) or bbox_dim < 1 or bbox_dim_y < 1:
        raise InputError(
            f"crop parameters offset_range={tuple(offset_range)}, bbox_dim={bbox_dim}, bbox_dim_y={bbox_dim_y} "
            f"give empty crops on {h}x{w} images (need 0 <= low < high <= min(H, W) and boxes >= 1; "
            f"data.augment.crop_params_for_size({h}, {w}) gives scaled originals)"
        )


def _crop_axis(start: tf.Tensor, length: tf.Tensor, out_len: int):
    """Interpolation indices/weights of ``resize(crop, out_len, order=1, mode='reflect')`` on one axis.

    Output ``o`` samples the crop at ``c = (o + 0.5) * length / out_len - 0.5`` (skimage's pixel-area
    alignment); outside ``[0, length-1]`` the crop is mirrored about its edge pixels (ndimage
    'mirror', skimage 'reflect').

    Args:
        start: (N,) int32 first crop index in the full image.
        length: (N,) int32 crop length (>= 1).

    Returns:
        ``(i0, i1, w1)``: (N, out_len) int32 indices into the full image and float32 weight of ``i1``.
    """
    lf = tf.cast(length, tf.float64)[:, None]  # (N, 1)
    o = tf.range(out_len, dtype=tf.float64)[None, :]  # (1, O)
    c = (o + 0.5) * lf / out_len - 0.5  # (N, O)
    c = tf.abs(c)  # mirror at 0
    c = tf.where(c > lf - 1.0, 2.0 * (lf - 1.0) - c, c)  # mirror at length-1
    c = tf.clip_by_value(c, 0.0, tf.maximum(lf - 1.0, 0.0))
    i0 = tf.minimum(tf.floor(c), tf.maximum(lf - 2.0, 0.0))  # (N, O)
    w1 = c - i0
    i1 = tf.minimum(i0 + 1.0, lf - 1.0)
    start = tf.cast(start, tf.int32)[:, None]
    return start + tf.cast(i0, tf.int32), start + tf.cast(i1, tf.int32), tf.cast(w1, tf.float32)


def crop_draws(
    seed: SeedLike, n: tf.Tensor | int, offset_range: tuple[int, int] = CROP_OFFSET_RANGE
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-left crop corners ``x, y ~ randint[offset_range)`` per image; (n,) int32 each."""
    s = split_seed(seed, 2)
    return _randint(s[0], [n], *offset_range), _randint(s[1], [n], *offset_range)


def crop_and_resize(
    images: tf.Tensor,
    seed: SeedLike,
    bbox_dim: int = CROP_BOX,
    bbox_dim_y: int = CROP_BOX,
    offset_range: tuple[int, int] = CROP_OFFSET_RANGE,
) -> tf.Tensor:
    """Random crop resized back to full size, ``utils.crop_batch`` (§3.2).

    Per image the top-left corner ``x, y ~ randint[offset_range)`` (original ``[10, 70)``), the crop
    is rows ``x : x + bbox_dim`` and columns ``y : y + bbox_dim_y`` (the original always uses 100
    columns whatever ``--bbox_dim`` is) and is resized to (H, W) bilinearly
    (``skimage.transform.resize(order=1, mode='reflect')``). As in the original NumPy slicing, a crop
    that runs past the border is truncated there (so it can become non-square, e.g. MMWHS 160x160)
    and the truncated crop is resized.

    Args:
        images: (N, H, W, 1) float32.
        seed: (2,) stateless seed.
        bbox_dim: crop height (``--bbox_dim``).
        bbox_dim_y: crop width (100 in the original).
        offset_range: ``[low, high)`` of the top-left corner; ``high - 1`` must be < H and < W so
            that no crop is empty. ``crop_params_for_size`` scales the originals to small images.

    Returns:
        (N, H, W, 1) float32.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    h, w = _static_hw(images, "crop_and_resize images")
    check_crop_params(h, w, bbox_dim, bbox_dim_y, offset_range)
    lo, hi = int(offset_range[0]), int(offset_range[1])
    n = tf.shape(images)[0]
    x, y = crop_draws(seed, n, (lo, hi))
    rows_len = tf.minimum(bbox_dim, h - x)  # (N,) truncated at the border like NumPy slicing
    cols_len = tf.minimum(bbox_dim_y, w - y)
    r0, r1, wr = _crop_axis(x, rows_len, h)  # (N, H)
    c0, c1, wc = _crop_axis(y, cols_len, w)  # (N, W)
    img = images[..., 0]  # (N, H, W)
    top = tf.gather(img, r0, axis=1, batch_dims=1)  # (N, H, W)
    bot = tf.gather(img, r1, axis=1, batch_dims=1)
    rows = top + wr[:, :, None] * (bot - top)  # (N, H, W)
    left = tf.gather(rows, c0, axis=2, batch_dims=1)  # (N, H, W)
    right = tf.gather(rows, c1, axis=2, batch_dims=1)
    return (left + wc[:, None, :] * (right - left))[..., None]  # (N, H, W, 1)
