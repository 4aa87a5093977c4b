"""Batches of the PLC joint step (ORIGINAL_SPEC §3.4.2), sampled on the host inside tf.data.

Per iteration (one *unit*; a replica always receives whole units):

1. 300 labeled slices (GT) and 300 unlabeled slices (pseudo-labels) drawn with replacement;
2. ``assemble_contrastive_batch``: the first 5 all-class slices of each, laid out by the pairing
   table (20 contrastive images = 10 pairs);
3. ``select_segmentation_slices``: the first 20 labeled candidates with at least
   ``min_seg_classes`` labels (the segmentation batch);
4. ``sample_anchors``: P anchor pixels per class and image; with ``contrastive_background`` the
   contrastive labels are shifted by one first (background -> class 1, class c -> c + 1, class 0
   never present), so the background is an anchor class and a prototype of the loss (binary tasks);
5. if 2-4 fail (too few qualifying slices, no valid anchor) the unit is marked ``valid = False``
   and the iteration is skipped (it still counts, as in the original).

Steps 1-5 are NumPy work on the host, run by ``tf.data.Dataset.from_generator``; the TF
augmentations (affine + deformation on the segmentation batch, ``brightness_contrast`` on each half
of the contrastive batch, ORIGINAL_SPEC §3.4.2 step 4) run in a parallel ``map``, and the pipeline
is prefetched so that sampling overlaps the training step.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from data import augment as A
from data.plc_selection import assemble_contrastive_batch, sample_anchors, select_segmentation_slices

CANDIDATES_LABELED = 300  # 15 * mtask_bs
CANDIDATES_UNLABELED = 300  # 30 * bt_size


class JointSampler:
    """Host sampler of the joint step's units (see module docstring).

    Args:
        lab_images, lab_labels: labeled volumes, lists of ``(D, H, W)``.
        unl_images, unl_labels: pseudo-labeled volumes, lists of ``(D, H, W)``.
        num_classes: C.
        min_seg_classes: ``DatasetConfig.min_seg_classes``.
        min_con_classes: labels a contrastive slice needs (``DatasetConfig.contrastive_classes``;
            None = all classes, the originals' rule).
        contrastive_background: background as a contrastive class (``DatasetConfig``); the
            contrastive labels then have ``num_classes + 1`` classes (see module docstring).
        seg_batch: labeled slices for the Dice loss (20).
        bt_size: contrastive pairs (10).
        num_pos: anchors per class and image (``--no_of_pos_eles``).
        inter_image: pairing table (True, ``local_loss_exp_no=1``) or intra layout.
        seed: seed of the NumPy generator.
    """

    def __init__(self, lab_images: Sequence[np.ndarray], lab_labels: Sequence[np.ndarray],
                 unl_images: Sequence[np.ndarray], unl_labels: Sequence[np.ndarray], num_classes: int,
                 min_seg_classes: int, seg_batch: int = 20, bt_size: int = 10, num_pos: int = 3,
                 inter_image: bool = True, seed: int = 0, min_con_classes: int | None = None,
                 contrastive_background: bool = False) -> None:
        self.li = np.concatenate([np.asarray(v, np.float32) for v in lab_images])  # (Nl, H, W)
        self.ll = np.concatenate([np.asarray(v, np.int32) for v in lab_labels])  # (Nl, H, W)
        self.ui = np.concatenate([np.asarray(v, np.float32) for v in unl_images])  # (Nu, H, W)
        self.ul = np.concatenate([np.asarray(v, np.int32) for v in unl_labels])  # (Nu, H, W)
        self.c = int(num_classes)
        self.min_seg = int(min_seg_classes)
        self.min_con = None if min_con_classes is None else int(min_con_classes)
        self.shift = int(bool(contrastive_background))
        self.c_con = self.c + self.shift  # classes of the contrastive labels
        self.seg_batch = int(seg_batch)
        self.bt_size = int(bt_size)
        self.num_pos = int(num_pos)
        self.inter = bool(inter_image)
        self.rng = np.random.default_rng(int(seed))
        self.h, self.w = self.li.shape[1:]

    def sample(self) -> dict[str, np.ndarray] | None:
        """One unit, or None when the iteration must be skipped."""
        ls = self.rng.integers(0, self.li.shape[0], CANDIDATES_LABELED)
        us = self.rng.integers(0, self.ui.shape[0], CANDIDATES_UNLABELED)
        lab_lbl = self.ll[ls]  # (300, H, W)
        con = assemble_contrastive_batch(self.li[ls], lab_lbl, self.ui[us], self.ul[us], self.c,
                                         inter_image=self.inter, bt_size=self.bt_size, min_classes=self.min_con)
        if con is None:
            return None
        seg_idx = select_segmentation_slices(lab_lbl, self.min_seg, self.seg_batch)
        if seg_idx is None:
            return None
        x_con, y_con = con  # (2B, H, W) each
        y_con = y_con + self.shift
        yx, valid = sample_anchors(y_con, self.c_con, self.num_pos, self.rng)
        if not valid.any():
            return None
        return {"x_lab": self.li[ls][seg_idx], "y_lab": lab_lbl[seg_idx], "x_con": x_con,
                "y_con": y_con.astype(np.int32), "anchor_yx": yx, "anchor_valid": valid}

    def empty(self) -> dict[str, np.ndarray]:
        """A placeholder unit for skipped iterations (never trained on)."""
        n2, p, c1 = 2 * self.bt_size, self.num_pos, self.c_con - 1
        return {"x_lab": np.zeros((self.seg_batch, self.h, self.w), np.float32),
                "y_lab": np.zeros((self.seg_batch, self.h, self.w), np.int32),
                "x_con": np.zeros((n2, self.h, self.w), np.float32),
                "y_con": np.zeros((n2, self.h, self.w), np.int32),
                "anchor_yx": np.zeros((n2, c1, p, 2), np.int32),
                "anchor_valid": np.zeros((n2, c1, p), bool)}

    def generator(self) -> Iterator[dict[str, np.ndarray]]:
        """Infinite stream of units with ``valid`` flags and a per-unit augmentation seed."""
        while True:
            unit = self.sample()
            valid = unit is not None
            unit = unit if valid else self.empty()
            unit["valid"] = np.bool_(valid)
            unit["seed"] = self.rng.integers(0, 2**31 - 1, size=2, dtype=np.int64)
            yield unit

    def signature(self) -> dict[str, tf.TensorSpec]:
        n2, p, c1 = 2 * self.bt_size, self.num_pos, self.c_con - 1
        h, w = self.h, self.w
        return {"x_lab": tf.TensorSpec((self.seg_batch, h, w), tf.float32),
                "y_lab": tf.TensorSpec((self.seg_batch, h, w), tf.int32),
                "x_con": tf.TensorSpec((n2, h, w), tf.float32),
                "y_con": tf.TensorSpec((n2, h, w), tf.int32),
                "anchor_yx": tf.TensorSpec((n2, c1, p, 2), tf.int32),
                "anchor_valid": tf.TensorSpec((n2, c1, p), tf.bool),
                "valid": tf.TensorSpec((), tf.bool),
                "seed": tf.TensorSpec((2,), tf.int64)}


def augment_unit(unit: dict[str, tf.Tensor], num_classes: int, bt_size: int, augment: bool = True,
                 deform: bool = True, intensity: bool = False, sigma: float = 5.0,
                 con_classes: int | None = None) -> dict[str, tf.Tensor]:
    """TF part of a unit: seg batch affine (+ deformation, soft one-hot labels), contrastive halves
    intensity-augmented separately (one draw per half), labels one-hot (contrastive labels with
    ``con_classes`` classes, default ``num_classes``)."""
    s_aff, s_def, s_c1, s_c2 = A.split_seed(unit["seed"], 4)
    x = unit["x_lab"][..., None]  # (N_l, H, W, 1)
    y = unit["y_lab"]  # (N_l, H, W)
    if augment:
        x, y = A.affine_augment(x, y, s_aff)
    onehot = tf.one_hot(y, num_classes, dtype=tf.float32)  # (N_l, H, W, C)
    if augment and deform:
        x, onehot = A.random_deformation(x, onehot, s_def, sigma=sigma, mix=True, intensity=intensity)
    xc = unit["x_con"][..., None]  # (2B, H, W, 1)
    xc = tf.concat([A.brightness_contrast(xc[:bt_size], s_c1),
                    A.brightness_contrast(xc[bt_size:], s_c2)], axis=0)  # (2B, H, W, 1)
    return {"x_lab": x, "y_lab": onehot, "x_con": xc,
            "y_con": tf.one_hot(unit["y_con"], con_classes or num_classes, dtype=tf.float32),  # (2B, H, W, C')
            "anchor_yx": unit["anchor_yx"], "anchor_valid": unit["anchor_valid"],
            "valid": unit["valid"]}


def joint_dataset(sampler: JointSampler, augment: bool = True, deform: bool = True,
                  intensity: bool = False, sigma: float = 5.0, prefetch: int = 2) -> tf.data.Dataset:
    """Infinite dataset of augmented units, sampled on the host and prefetched."""
    ds = tf.data.Dataset.from_generator(sampler.generator, output_signature=sampler.signature())
    ds = ds.map(lambda u: augment_unit(u, sampler.c, sampler.bt_size, augment, deform, intensity, sigma,
                                       sampler.c_con),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(prefetch)
