"""Host-side (NumPy) selection of the PLC joint step's inputs (ORIGINAL_SPEC §3.4.2, §3.4.3).

* :func:`assemble_contrastive_batch` picks 5 labeled and 5 pseudo-labeled slices that contain every
  class and lays them out as the 10 image pairs of §3.4.2;
* :func:`select_segmentation_slices` picks the 20 slices of the segmentation batch (§3.4.2 step 7);
* :func:`sample_anchors` draws P anchor pixels per foreground class and image
  (``calc_pos_neg_index`` of §3.4.3) and returns a validity mask instead of the sentinel 1000.

The loss that consumes them is :func:`losses.pseudo_label_contrastive.pseudo_label_local_contrastive_loss`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np

from common.errors import InputError

# The pairing table of §3.4.2 for ``local_loss_exp_no=1`` (inter). The 10 selected slices are
# indexed ``[L0..L4, U0..U4]`` = 0..9; pair k = (slice FIRST[k], slice SECOND[k]).
INTER_PAIRS_FIRST = (0, 1, 2, 3, 4, 5, 5, 7, 7, 8)  # L0 L1 L2 L3 L4 U0 U0 U2 U2 U3
INTER_PAIRS_SECOND = (0, 6, 2, 8, 9, 5, 6, 7, 8, 9)  # L0 U1 L2 U3 U4 U0 U1 U2 U3 U4
CONTRASTIVE_BT_SIZE = 10  # the only --bt_size the table supports (ORIGINAL_SPEC §9.3.4)


def sample_anchors(
    labels: np.ndarray, num_classes: int, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw anchor pixels per foreground class (``calc_pos_neg_index`` of ORIGINAL_SPEC §3.4.3).

    For pair k (rows k and B + k) and class c in 1..C-1, the slot is valid only if c is present in
    both images; then P pixels are drawn uniformly with replacement among the class-c pixels of
    image k and, independently, of image B + k. Invalid slots hold (0, 0) and ``valid=False``
    instead of the original's sentinel 1000 (whose out-of-range gather only worked on GPU). The
    negatives the original also drew are never used by its loss and are not produced.

    Runs on the host (NumPy, before the batch enters the graph or inside tf.data through
    ``tf.numpy_function``): the per-class pixel lists have data-dependent sizes, the work is a few
    cumulative sums on 2B label maps, and keeping it outside makes the loss a pure, XLA-compilable
    function of fixed-shape tensors.

    Args:
        labels: ``(2B, H, W)`` integer label maps of the contrastive images (GT or pseudo-labels).
        num_classes: C, including background.
        num_samples: P, anchors per class and image (``--no_of_pos_eles``).
        rng: NumPy generator that supplies all randomness.

    Returns:
        ``anchor_yx (2B, C-1, P, 2)`` int32 (row, col) and ``anchor_valid (2B, C-1, P)`` bool.

    Raises:
        InputError: bad shapes, an odd number of images, or non-positive sizes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] % 2:
        raise InputError(f"sample_anchors: labels must be (2B, H, W) with 2B even, got shape {labels.shape}")
    if num_classes < 2 or num_samples < 1:
        raise InputError(
            f"sample_anchors: need num_classes >= 2 and num_samples >= 1, got {num_classes}, {num_samples}"
        )
    n, h, w = labels.shape
    b = n // 2
    flat = labels.reshape(n, h * w)  # (2B, HW)
    fg_classes = np.arange(1, num_classes)  # (C-1,)
    is_c = flat[:, None, :] == fg_classes[None, :, None]  # (2B, C-1, HW)
    cum = np.cumsum(is_c, axis=-1, dtype=np.int64)  # (2B, C-1, HW)
    counts = cum[..., -1]  # (2B, C-1)
    present = counts > 0  # (2B, C-1)
    pair_valid = present[:b] & present[b:]  # (B, C-1)
    valid = np.concatenate([pair_valid, pair_valid], axis=0)  # (2B, C-1)
    # j-th pixel of the class (0-based rank), uniform with replacement.
    rank = rng.integers(0, np.maximum(counts, 1)[..., None], size=(n, num_classes - 1, num_samples))  # (2B, C-1, P)
    # Position of the (rank+1)-th True in each row: search all rows at once in one increasing array
    # by offsetting row r's cumulative counts by r * (HW + 1).
    rows = cum.shape[0] * cum.shape[1]
    offsets = np.arange(rows, dtype=np.int64).reshape(n, num_classes - 1) * (h * w + 1)  # (2B, C-1)
    keys = (cum + offsets[..., None]).reshape(-1)  # (2B*(C-1)*HW,)
    targets = rank + 1 + offsets[..., None]  # (2B, C-1, P)
    pos = np.searchsorted(keys, targets.reshape(-1), side="left").reshape(targets.shape)  # (2B, C-1, P)
    pixel = pos - (np.arange(rows).reshape(n, num_classes - 1, 1) * (h * w))  # (2B, C-1, P)
    anchor_valid = np.broadcast_to(valid[..., None], pixel.shape).copy()  # (2B, C-1, P)
    pixel = np.where(anchor_valid, pixel, 0)
    anchor_yx = np.stack([pixel // w, pixel % w], axis=-1).astype(np.int32)  # (2B, C-1, P, 2)
    return anchor_yx, anchor_valid


def _first_slices(labels: np.ndarray, keep: Callable[[np.ndarray], bool], count: int) -> Optional[np.ndarray]:
    """Indices of the first ``count`` slices whose sorted label values satisfy ``keep``, or None."""
    found = []
    for i in range(labels.shape[0]):  # host scan with early exit, as the original
        if keep(np.unique(labels[i])):
            found.append(i)
            if len(found) == count:
                return np.asarray(found)
    return None


def _first_full_label_slices(labels: np.ndarray, num_classes: int, count: int,
                             min_classes: Optional[int] = None) -> Optional[np.ndarray]:
    """Indices of the first ``count`` slices whose label set is exactly {0..C-1} (``min_classes``
    None or C), or that hold at least ``min_classes`` distinct labels, or None."""
    if min_classes is None or int(min_classes) >= num_classes:
        wanted = np.arange(num_classes)
        return _first_slices(labels, lambda values: np.array_equal(values, wanted), count)
    return _first_slices(labels, lambda values: values.size >= int(min_classes), count)


def assemble_contrastive_batch(
    labeled_imgs: np.ndarray,
    labeled_lbls: np.ndarray,
    unlabeled_imgs: np.ndarray,
    unlabeled_lbls: np.ndarray,
    num_classes: int,
    inter_image: bool = True,
    bt_size: int = CONTRASTIVE_BT_SIZE,
    min_classes: Optional[int] = None,
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Select and pair the contrastive images of one iteration (ORIGINAL_SPEC §3.4.2 steps 2-3).

    From candidate slices drawn by the caller (300 labeled with GT, 300 unlabeled with pseudo-labels,
    step 1), keep in order the first ``bt_size // 2`` = 5 of each whose label set is exactly
    {0, .., C-1} (for C = 2: background and the structure; ``min_classes`` < C relaxes the rule to
    slices with at least that many distinct labels, for datasets whose classes rarely share a
    slice; the loss masks the classes a pair lacks). Inter (``local_loss_exp_no=1``) lays out the hard-coded table

        pair k   :  0  1  2  3  4  5  6  7  8  9
        image 1  : L0 L1 L2 L3 L4 U0 U0 U2 U2 U3
        image 2  : L0 U1 L2 U3 U4 U0 U1 U2 U3 U4

    and intra (``local_loss_exp_no=0``) pairs each selected slice ``[L0..L4, U0..U4]`` with itself.
    Images come back unaugmented: the caller applies the intensity augmentation separately to the
    two halves (step 4), which is what makes the same-slice pairs differ.

    Runs on the host (NumPy): a data-dependent scan with early exit over candidate slices.

    Args:
        labeled_imgs: ``(N_l, H, W)`` candidate labeled slices.
        labeled_lbls: ``(N_l, H, W)`` their integer labels.
        unlabeled_imgs: ``(N_u, H, W)`` candidate unlabeled slices.
        unlabeled_lbls: ``(N_u, H, W)`` their integer pseudo-labels.
        num_classes: C, including background.
        inter_image: True for the inter table, False for the intra layout.
        bt_size: number of pairs; only 10 is supported (the table is hard-coded, §9.3.4).
        min_classes: None (or C) for the originals' all-classes rule, else the minimum number of
            distinct labels (background counts) of a selected slice, in 2..C.

    Returns:
        ``(images (20, H, W), labels (20, H, W))`` with rows ``[0, 10)`` the first images of the pairs
        and rows ``[10, 20)`` the second images, or None when fewer than 5 slices of either kind
        contain every class (the original skips the iteration).

    Raises:
        InputError: ``bt_size != 10`` or inconsistent shapes.
    """
    if bt_size != CONTRASTIVE_BT_SIZE:
        raise InputError(
            f"--bt_size must be {CONTRASTIVE_BT_SIZE} for the pseudo-label contrastive loss: the pairing table of the "
            f"original is defined for 10 pairs only (got {bt_size})"
        )
    labeled_imgs, labeled_lbls = np.asarray(labeled_imgs), np.asarray(labeled_lbls)
    unlabeled_imgs, unlabeled_lbls = np.asarray(unlabeled_imgs), np.asarray(unlabeled_lbls)
    if labeled_imgs.shape != labeled_lbls.shape or unlabeled_imgs.shape != unlabeled_lbls.shape:
        raise InputError(
            f"assemble_contrastive_batch: images and labels differ in shape: {labeled_imgs.shape} vs "
            f"{labeled_lbls.shape}, {unlabeled_imgs.shape} vs {unlabeled_lbls.shape}"
        )
    if min_classes is not None and not 2 <= int(min_classes) <= num_classes:
        raise InputError(f"assemble_contrastive_batch: min_classes must lie in 2..{num_classes}, got {min_classes}")
    half = bt_size // 2
    lab = _first_full_label_slices(labeled_lbls, num_classes, half, min_classes)
    unl = _first_full_label_slices(unlabeled_lbls, num_classes, half, min_classes)
    if lab is None or unl is None:
        return None
    sel_imgs = np.concatenate([labeled_imgs[lab], unlabeled_imgs[unl]], axis=0)  # (10, H, W)
    sel_lbls = np.concatenate([labeled_lbls[lab], unlabeled_lbls[unl]], axis=0)  # (10, H, W)
    if inter_image:
        order = np.asarray(INTER_PAIRS_FIRST + INTER_PAIRS_SECOND)  # (20,)
    else:
        order = np.concatenate([np.arange(bt_size), np.arange(bt_size)])  # (20,)
    return sel_imgs[order], sel_lbls[order]


def select_segmentation_slices(labels: np.ndarray, min_classes: int, batch_size: int = 20) -> Optional[np.ndarray]:
    """Indices of the segmentation batch of the joint step (ORIGINAL_SPEC §3.4.2 step 7).

    Scans the labeled candidate slices from the start (so the batch may overlap the contrastive
    slices, as in the original) and keeps the first ``batch_size`` with at least ``min_classes``
    distinct label values (``DatasetConfig.min_seg_classes``). Runs on the host.

    Args:
        labels: ``(N, H, W)`` integer labels of the labeled candidate slices.
        min_classes: minimum number of distinct labels (background counts).
        batch_size: slices to select (``mtask_bs`` = 20).

    Returns:
        ``(batch_size,)`` int indices into ``labels``, or None when fewer qualify (iteration skipped).
    """
    return _first_slices(np.asarray(labels), lambda values: values.size >= min_classes, batch_size)
