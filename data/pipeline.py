"""Slice samplers as ``tf.data`` pipelines (ORIGINAL_SPEC §4.1, §5.4, §3.2, §3.3).

Inputs are in-memory volumes: lists of ``(D, H, W)`` float32 images (and ``(D, H, W)`` integer labels),
all with the same (H, W). Every sampler returns an *infinite* ``tf.data.Dataset`` whose element ``i`` is
a pure function of ``(seed, i)``: the per-step seed is ``stateless_fold_in(seed, i)``, the batch is
drawn and augmented with stateless TF ops inside ``Dataset.map(num_parallel_calls=AUTOTUNE,
deterministic=True)``, and the result is prefetched. The same seed gives the same stream.

Distribution: each dataset yields complete batches of the original method (a whole labeled batch,
whole partition groups for the global loss, whole pairs for the local loss). Under a
``tf.distribute`` strategy build one pipeline per replica with a replica-dependent seed, e.g.::

    def dataset_fn(ctx):
        return labeled_batches(imgs, labs, C, seed=replica_seed(seed, ctx.input_pipeline_id))
    strategy.distribute_datasets_from_function(dataset_fn)

so that a replica never receives a slice of a mixed batch (DESIGN.md, "Distribution semantics").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from data import augment as A
from common.errors import InputError, check_choice

# --global_loss_exp_no / --local_loss_exp_no of pre-training (checked here and by the stage, with this one check).
GLOBAL_LOSS_EXPS = {0: "G^R", 1: "G^D-", 2: "G^D"}
LOCAL_LOSS_EXPS = {0: "L^R", 1: "L^D"}

SeedArg = int | Sequence[int]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def replica_seed(seed: int, replica_id: int) -> tuple[int, int]:
    """Seed for the pipeline of replica (or input pipeline / worker) ``replica_id``."""
    return (int(seed), int(replica_id))


def _base_seed(seed: SeedArg) -> tf.Tensor:
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], tf.int64)
    arr = np.asarray(seed)
    if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"seed: expected an int or a pair of ints, got {seed!r}")
    return tf.constant(arr, tf.int64)


def _stack_volumes(images: Sequence[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate volumes along the slice axis.

    Returns:
        ``(slices (T, H, W) float32, starts (V,) int32, lengths (V,) int32)``.
    """
    if len(images) == 0:
        raise InputError(f"{what}: no volumes given")
    vols = []
    for i, v in enumerate(images):
        v = np.asarray(v)
        if v.ndim != 3 or min(v.shape) < 1:
            raise InputError(f"{what}: volume {i} has shape {v.shape}, expected a non-empty (D, H, W) array")
        if v.shape[1:] != np.asarray(images[0]).shape[1:]:
            first = np.asarray(images[0]).shape[1:]
            raise InputError(f"{what}: volume {i} has slices {v.shape[1:]}, volume 0 has {first}")
        vols.append(v)
    lengths = np.array([v.shape[0] for v in vols], np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    return np.concatenate(vols, axis=0), starts, lengths


def _stack_images(images: Sequence[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    slices, starts, lengths = _stack_volumes(images, what)
    slices = slices.astype(np.float32, copy=False)
    if not np.all(np.isfinite(slices)):
        raise InputError(f"{what}: images contain NaN or Inf values")
    return slices, starts, lengths


def _infinite(make_batch: Callable[[tf.Tensor], object], seed: SeedArg) -> tf.data.Dataset:
    """Dataset whose element ``i`` is ``make_batch(stateless_fold_in(seed, i))``, prefetched."""
    base = _base_seed(seed)

    def element(i: tf.Tensor):
        return make_batch(tf.random.experimental.stateless_fold_in(base, i))

    ds = tf.data.Dataset.counter()
    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _draw_slices(seed: tf.Tensor, total: int, n: int) -> tf.Tensor:
    """``n`` slice indices uniform over ``[0, total)`` with replacement (``np.random.choice``): (n,) int32."""
    return tf.random.stateless_uniform([n], seed, minval=0, maxval=total, dtype=tf.int32)


def partition_indices(
    seed: tf.Tensor, starts: tf.Tensor, lengths: tf.Tensor, n_vols: int, n_parts: int
) -> tf.Tensor:
    """``sample_minibatch_for_global_loss_opti`` (§3.2) as global slice indices.

    ``n_vols`` distinct volumes are drawn at random; volume ``v`` (D slices) is split into
    partitions ``[k * floor(D/S), (k+1) * floor(D/S))`` (the last ``D mod S`` slices are never used) and
    one slice is drawn uniformly per partition. Layout volume-major, partition-minor: entry
    ``S * j + k`` is partition ``k`` of the ``j``-th drawn volume.

    Args:
        seed: (2,) stateless seed.
        starts: (V,) int32 first index of each volume in the stacked slices.
        lengths: (V,) int32 slice counts (each >= n_parts).
        n_vols: number of distinct volumes (<= V).
        n_parts: number of partitions S.

    Returns:
        (n_vols * n_parts,) int32 indices into the stacked slices.
    """
    s_vol, s_slice = A.split_seed(seed, 2)
    num_volumes = tf.shape(starts)[0]
    order = tf.argsort(tf.random.stateless_uniform([num_volumes], s_vol))  # random permutation
    chosen = order[:n_vols]  # (n,)
    part_len = tf.gather(lengths, chosen) // n_parts  # (n,)
    u = tf.random.stateless_uniform([n_vols, n_parts], s_slice)  # (n, S)
    offset = tf.cast(tf.floor(u * tf.cast(part_len, tf.float32)[:, None]), tf.int32)  # (n, S)
    offset = tf.minimum(offset, part_len[:, None] - 1)
    first = tf.gather(starts, chosen)[:, None] + tf.range(n_parts)[None, :] * part_len[:, None]  # (n, S)
    return tf.reshape(first + offset, [-1])  # (n*S,)


def _check_partitions(lengths: np.ndarray, n_vols: int, n_parts: int, what: str) -> None:
    if n_parts < 1:
        raise InputError(f"{what}: n_parts must be >= 1, got {n_parts}")
    if len(lengths) < n_vols:
        raise InputError(f"{what}: needs {n_vols} distinct volumes per batch, only {len(lengths)} given")
    short = np.nonzero(lengths < n_parts)[0]
    if short.size:
        raise InputError(f"{what}: volume {short[0]} has {lengths[short[0]]} slices, fewer than n_parts={n_parts}")


def _gather(slices: tf.Tensor, idx: tf.Tensor) -> tf.Tensor:
    return tf.gather(slices, idx)[..., None]  # (n, H, W, 1)


def _interleave(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``[a0, b0, a1, b1, ...]`` from two (B, H, W, 1) batches (``stitch_two_crop_batches``)."""
    h, w = a.shape[1], a.shape[2]
    return tf.reshape(tf.stack([a, b], axis=1), [-1, h, w, 1])  # (2B, H, W, 1)


# ----------------------------------------------------------------------------------------------
# supervised
# ----------------------------------------------------------------------------------------------
def labeled_batches(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    batch_size: int = 20,
    seed: SeedArg = 0,
    augment: bool = True,
    deform: bool = True,
    intensity: bool = False,
    sigma: float = 5.0,
) -> tf.data.Dataset:
    """Augmented labeled batches of the supervised stages (§4.1, §5.4, §5.5).

    Per step: ``batch_size`` slices drawn uniformly with replacement from all slices of all labeled
    volumes (``shuffle_minibatch_mtask``), then ``affine_augment`` (``augment``), one-hot labels, then
    ``random_deformation`` with the ``rd_ni`` mixing (``deform``, i.e. ``--rd_en``). ``intensity``
    (``--ri_en``) adds ``contrast_net`` to the deformed rows as the original intended (bug 9.1.3:
    off in the release); without ``deform`` it is applied, with the same mixing, to the affine batch.

    Args:
        images: volumes, each (D, H, W) float32.
        labels: matching (D, H, W) integer labels in ``0..num_classes-1``.
        num_classes: C.
        batch_size: slices per batch (``mtask_bs`` = 20).
        seed: int or pair of ints.
        augment, deform, intensity: see above.
        sigma: deformation grid standard deviation in pixels (``--sigma``).

    Returns:
        Infinite dataset of ``(x (B, H, W, 1) float32, y (B, H, W, C) float32)``.
    """
    slices, _, lengths = _stack_images(images, "labeled images")
    if len(labels) != len(images):
        raise InputError(f"labeled volumes: {len(images)} images but {len(labels)} label volumes")
    labs, _, lab_lengths = _stack_volumes(labels, "labels")
    if labs.shape != slices.shape:
        bad = next(i for i in range(len(images)) if np.shape(images[i]) != np.shape(labels[i]))
        raise InputError(
            f"labeled volume {bad}: image shape {np.shape(images[bad])} != label shape {np.shape(labels[bad])}"
        )
    if not np.issubdtype(labs.dtype, np.integer):
        if not np.all(np.isfinite(labs)) or np.any(labs != np.round(labs)):
            raise InputError("labels: values must be integers")
    if labs.min() < 0 or labs.max() >= num_classes:
        raise InputError(f"labels: values must be in 0..{num_classes - 1}, found {labs.min()}..{labs.max()}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    x_all = tf.constant(slices)  # (T, H, W)
    y_all = tf.constant(labs.astype(np.int32))  # (T, H, W)
    total = int(slices.shape[0])

    def make(seed: tf.Tensor):
        s_draw, s_aff, s_def, s_int, s_mix = A.split_seed(seed, 5)
        idx = _draw_slices(s_draw, total, batch_size)  # (B,)
        x = _gather(x_all, idx)  # (B, H, W, 1)
        y = tf.gather(y_all, idx)  # (B, H, W)
        if augment:
            x, y = A.affine_augment(x, y, s_aff)
        onehot = tf.one_hot(y, num_classes, dtype=tf.float32)  # (B, H, W, C)
        if deform:
            x, onehot = A.random_deformation(x, onehot, s_def, sigma=sigma, mix=True, intensity=intensity)
        elif intensity:
            x_int = A.intensity_contrast_brightness(x, s_int)
            x, onehot = A.mix_batches(x, onehot, x_int, onehot, s_mix)
        return x, onehot

    return _infinite(make, seed)


def unlabeled_slices(images: Sequence[np.ndarray], batch_size: int, seed: SeedArg = 0) -> tf.data.Dataset:
    """Batches of ``batch_size`` slices drawn uniformly with replacement from all volumes, unaugmented.

    Returns:
        Infinite dataset of ``x (B, H, W, 1) float32``.
    """
    slices, _, _ = _stack_images(images, "unlabeled images")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    x_all = tf.constant(slices)
    total = int(slices.shape[0])
    return _infinite(lambda s: _gather(x_all, _draw_slices(s, total, batch_size)), seed)


# ----------------------------------------------------------------------------------------------
# global contrastive loss (§3.2)
# ----------------------------------------------------------------------------------------------
def global_loss_batches(
    images: Sequence[np.ndarray],
    exp_no: int,
    bt_size: int = 12,
    n_parts: int = 4,
    seed: SeedArg = 0,
    bbox_dim: int = A.CROP_BOX,
    replicate_gd_zero_block: bool = False,
    bbox_dim_y: int = A.CROP_BOX,
    crop_offset_range: tuple[int, int] = A.CROP_OFFSET_RANGE,
    augment: bool = True,
) -> tf.data.Dataset:
    """Batches for the global contrastive loss, laid out exactly as §3.2 expects.

    A *view* of a slice is ``brightness_contrast(crop_and_resize(slice))``; each view batch uses one
    intensity draw (as one ``brit_cont_net`` call) and per-image crops. ``B = bt_size``, ``S = n_parts``.

    * ``exp_no=0`` (G^R): ``B`` slices drawn with replacement from all slices; two independent view
      batches ``V1, V2``; rows interleaved ``[V1_0, V2_0, V1_1, V2_1, ...]``: **2B rows**, row ``2i`` and
      ``2i+1`` are the two views of slice ``i``.
    * ``exp_no=1`` (G^D-): ``X`` = the first ``B`` entries of a partition sample of ``ceil(B/S)``
      distinct volumes (row ``S*v + k`` = volume ``v``, partition ``k``); ``A1, A2`` = two independent view
      batches of ``X``; rows ``[X (0..B-1), A1 (B..2B-1), A2 (2B..3B-1)]``: **3B rows**; rows ``i``,
      ``B+i``, ``2B+i`` show the same slice; rows with equal ``i mod S`` (i < B) share a partition.
    * ``exp_no=2`` (G^D, paper default; needs ``B % S == 0``): two independent partition samples
      ``S1, S2`` of ``B/S`` distinct volumes each (volumes may coincide across the sets), with view
      batches ``A1 = view(S1)``, ``A2 = view(S2)``. **4B rows** in ``B/S`` blocks of ``4S`` rows; block ``b``
      (rows ``4Sb .. 4Sb+4S-1``) is ``[S1[Sb:Sb+S], A1[Sb:Sb+S], S2[Sb:Sb+S], A2[Sb:Sb+S]]``, i.e. row
      ``4Sb + S*q + k`` is partition ``k`` of volume ``b`` of set 1 (q=0), its view (q=1), volume ``b`` of
      set 2 (q=2), its view (q=3). ``replicate_gd_zero_block`` reproduces bug 9.2.1: the last block
      (rows ``4B-4S .. 4B-1``) is left all-zero, as ``stitch_batch_global_loss_gd`` never writes it.
      (The original defines this layout for S=4 only; for other S this is its direct generalization.)

    Args:
        images: unlabeled volumes, each (D, H, W) with D >= n_parts for exp 1, 2.
        exp_no: ``--global_loss_exp_no`` 0, 1 or 2 (4, the undocumented 6-set variant, is not ported).
        bt_size: B.
        n_parts: S.
        seed: int or pair of ints.
        bbox_dim: crop height (``--bbox_dim``); ``bbox_dim_y`` crop width (fixed 100 in the original).
        replicate_gd_zero_block: see above (exp 2 only).
        crop_offset_range: crop corner range, ``[10, 70)`` originally; see ``augment.crop_params_for_size``.
        augment: False makes every view the unchanged slice (layout checks, ablations); the slices
            drawn for a seed are the same either way.

    Returns:
        Infinite dataset of ``x (N, H, W, 1) float32`` with N = 2B, 3B or 4B.
    """
    slices, starts, lengths = _stack_images(images, "unlabeled images")
    h, w = slices.shape[1:]
    A.check_crop_params(h, w, bbox_dim, bbox_dim_y, crop_offset_range)
    if bt_size < 1:
        raise InputError(f"bt_size must be >= 1, got {bt_size}")
    b, s = bt_size, n_parts
    if exp_no == 0:
        pass
    elif exp_no == 1:
        _check_partitions(lengths, math.ceil(b / max(s, 1)), s, "global loss exp 1")
    elif exp_no == 2:
        if s < 1 or b % s:
            raise InputError(f"global loss exp 2: bt_size={b} must be a multiple of n_parts={s}")
        _check_partitions(lengths, b // s, s, "global loss exp 2")
    else:
        check_choice("global_loss_exp_no", exp_no, GLOBAL_LOSS_EXPS)
    x_all = tf.constant(slices)
    starts_t, lengths_t = tf.constant(starts), tf.constant(lengths)
    total = int(slices.shape[0])

    def view(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        if not augment:
            return x
        s_crop, s_int = A.split_seed(seed, 2)
        crop = A.crop_and_resize(x, s_crop, bbox_dim, bbox_dim_y, crop_offset_range)
        return A.brightness_contrast(crop, s_int)  # (n, H, W, 1)

    def make(seed: tf.Tensor) -> tf.Tensor:
        k = A.split_seed(seed, 6)
        if exp_no == 0:
            x = _gather(x_all, _draw_slices(k[0], total, b))  # (B, H, W, 1)
            return _interleave(view(x, k[1]), view(x, k[2]))  # (2B, H, W, 1)
        if exp_no == 1:
            idx = partition_indices(k[0], starts_t, lengths_t, math.ceil(b / s), s)[:b]
            x = _gather(x_all, idx)  # (B, H, W, 1)
            return tf.concat([x, view(x, k[1]), view(x, k[2])], axis=0)  # (3B, H, W, 1)
        set1 = _gather(x_all, partition_indices(k[0], starts_t, lengths_t, b // s, s))  # (B, H, W, 1)
        set2 = _gather(x_all, partition_indices(k[1], starts_t, lengths_t, b // s, s))
        parts = [set1, view(set1, k[2]), set2, view(set2, k[3])]
        blocks = tf.stack([tf.reshape(p, [b // s, s, h, w, 1]) for p in parts], axis=1)  # (B/S, 4, S, H, W, 1)
        x = tf.reshape(blocks, [4 * b, h, w, 1])  # (4B, H, W, 1)
        if replicate_gd_zero_block:
            real = tf.range(4 * b) < 4 * b - 4 * s  # (4B,)
            x = tf.where(real[:, None, None, None], x, tf.zeros_like(x))
        return x

    return _infinite(make, seed)


# ----------------------------------------------------------------------------------------------
# local contrastive loss (§3.3)
# ----------------------------------------------------------------------------------------------
LD_VOLUMES, LD_PARTS = 3, 4  # L^D batch: 3 volumes x 4 partitions, hard-coded in the original


def local_loss_batches(
    images: Sequence[np.ndarray], exp_no: int, bt_size: int = 10, seed: SeedArg = 0, augment: bool = True
) -> tf.data.Dataset:
    """Batches for the local contrastive loss of the decoder pretraining (§3.3).

    A view is ``brightness_contrast`` of the whole batch (one draw per view, no crop).

    * ``exp_no=0`` (L^R): ``B = bt_size`` slices drawn with replacement from all slices, two views
      ``a, b`` interleaved ``[a_0, b_0, a_1, b_1, ...]``: **2B rows**, rows ``2i, 2i+1`` are one pair.
      (The released script always used B = 10 whatever ``--bt_size`` said, bug 9.2.6; pass 10.)
    * ``exp_no=1`` (L^D): 12 slices = 3 distinct volumes x 4 partitions (row ``4v + k`` = volume ``v``,
      partition ``k``), rows ``[view1 (0..11), view2 (12..23)]``: **24 rows**; ``bt_size`` is ignored,
      as in the original, which hard-codes this batch.

    ``augment=False`` makes every view the unchanged slice (layout checks, ablations); the slices
    drawn for a seed are the same either way.

    Returns:
        Infinite dataset of ``x (N, H, W, 1) float32`` (N = 2B or 24).
    """
    slices, starts, lengths = _stack_images(images, "unlabeled images")
    if exp_no == 0:
        if bt_size < 1:
            raise InputError(f"bt_size must be >= 1, got {bt_size}")
    elif exp_no == 1:
        _check_partitions(lengths, LD_VOLUMES, LD_PARTS, "local loss exp 1")
    else:
        check_choice("local_loss_exp_no", exp_no, LOCAL_LOSS_EXPS)
    x_all = tf.constant(slices)
    starts_t, lengths_t = tf.constant(starts), tf.constant(lengths)
    total = int(slices.shape[0])

    def view(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return A.brightness_contrast(x, seed) if augment else x

    def make(seed: tf.Tensor) -> tf.Tensor:
        k = A.split_seed(seed, 3)
        if exp_no == 0:
            x = _gather(x_all, _draw_slices(k[0], total, bt_size))  # (B, H, W, 1)
            return _interleave(view(x, k[1]), view(x, k[2]))  # (2B, H, W, 1)
        x = _gather(x_all, partition_indices(k[0], starts_t, lengths_t, LD_VOLUMES, LD_PARTS))  # (12, H, W, 1)
        return tf.concat([view(x, k[1]), view(x, k[2])], axis=0)  # (24, H, W, 1)

    return _infinite(make, seed)
