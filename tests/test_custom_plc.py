"""PLC pieces at any class count (README "Your own data"): the binary (C = 2) pseudo-label
contrastive loss with and without the background as a contrastive class, the joint sampler's
``contrastive_background`` and ``min_con_classes``, and the TTA filter for C = 2."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.plc_selection import assemble_contrastive_batch, sample_anchors
from losses.pseudo_label_contrastive import pseudo_label_local_contrastive_loss
from pseudolabels import tta
from data.joint_sampler import JointSampler, joint_dataset


def _binary_labels(n: int = 4, size: int = 8) -> np.ndarray:
    labels = np.zeros((n, size, size), np.int32)
    for i in range(n):
        labels[i, 1 + i % 2:5 + i % 2, 2:6] = 1  # a 4x4 structure, every image has background too
    return labels


def _loss_and_background_grad(labels: np.ndarray, num_classes: int, inter: bool, background: np.ndarray):
    rng = np.random.default_rng(0)
    emb = tf.Variable(rng.normal(size=labels.shape + (5,)).astype(np.float32))  # (2B, H, W, E)
    yx, valid = sample_anchors(labels, num_classes, 3, rng)  # (2B, C-1, 3, 2)
    with tf.GradientTape() as tape:
        loss = pseudo_label_local_contrastive_loss(emb, tf.one_hot(labels, num_classes), yx, valid,
                                                   inter_image=inter)
    grad = tape.gradient(loss, emb).numpy()  # (2B, H, W, E)
    return float(loss), np.abs(grad[background]).max()


def test_binary_loss_is_degenerate_without_the_background_class():
    """C = 2 with the originals' foreground-only prototypes: the intra loss is exactly 0 and the
    background pixels never enter the loss (no negatives); with the background as a contrastive
    class (labels shifted by one, as the joint sampler does) both change."""
    labels = _binary_labels()
    background = labels == 0
    intra, g_intra = _loss_and_background_grad(labels, 2, False, background)
    inter, g_inter = _loss_and_background_grad(labels, 2, True, background)
    assert intra == 0.0 and g_intra == 0.0
    assert inter > 0.0 and g_inter == 0.0  # fg anchors vs the two images' fg prototypes only
    shifted = labels + 1  # background -> class 1, structure -> class 2, class 0 never present
    intra_bg, g_intra_bg = _loss_and_background_grad(shifted, 3, False, background)
    inter_bg, g_inter_bg = _loss_and_background_grad(shifted, 3, True, background)
    assert intra_bg > 0.0 and g_intra_bg > 0.0 and inter_bg > 0.0 and g_inter_bg > 0.0
    assert np.isfinite([intra_bg, inter_bg]).all()


def test_joint_sampler_binary_with_background_class():
    rng = np.random.default_rng(0)
    lab = _binary_labels(6, 32)
    img = rng.random(lab.shape).astype(np.float32)
    s = JointSampler([img], [lab], [img], [lab], num_classes=2, min_seg_classes=2, seed=0,
                     contrastive_background=True)
    unit = s.sample()
    assert unit is not None and unit["anchor_yx"].shape == (20, 2, 3, 2) and unit["anchor_valid"].all()
    assert set(np.unique(unit["y_con"])) == {1, 2} and set(np.unique(unit["y_lab"])) == {0, 1}
    assert s.empty()["anchor_yx"].shape == (20, 2, 3, 2)
    for k, spec in s.signature().items():
        if k in unit:
            assert tuple(spec.shape) == unit[k].shape, k
    elem = next(iter(joint_dataset(s, augment=False)))
    assert elem["y_con"].shape == (20, 32, 32, 3) and elem["y_lab"].shape == (20, 32, 32, 2)
    np.testing.assert_array_equal(elem["y_con"].numpy()[..., 0], 0.0)  # the dummy class 0 is empty
    plain = JointSampler([img], [lab], [img], [lab], num_classes=2, min_seg_classes=2, seed=0).sample()
    assert plain["anchor_yx"].shape == (20, 1, 3, 2) and set(np.unique(plain["y_con"])) == {0, 1}
    # Pseudo-labels without the structure: no slice holds both classes -> the iteration is skipped.
    assert JointSampler([img], [lab], [img], [np.zeros_like(lab)], 2, 2, seed=0,
                        contrastive_background=True).sample() is None


def test_min_contrastive_classes_relaxes_the_all_classes_rule():
    labels = np.zeros((6, 16, 16), np.int32)
    labels[:, 2:6, 2:6] = 1
    labels[::2, 8:12, 8:12] = 2  # even slices: {0, 1, 2}
    labels[1::2, 8:12, 8:12] = 3  # odd slices: {0, 1, 3}; no slice holds all 4 classes
    imgs = np.zeros(labels.shape, np.float32)
    assert assemble_contrastive_batch(imgs, labels, imgs, labels, 4) is None
    assert assemble_contrastive_batch(imgs, labels, imgs, labels, 4, min_classes=4) is None
    x, y = assemble_contrastive_batch(imgs, labels, imgs, labels, 4, min_classes=3)
    assert x.shape == (20, 16, 16) and all(np.unique(s).size >= 3 for s in y)
    sampler = JointSampler([imgs], [labels], [imgs], [labels], 4, 3, seed=0, min_con_classes=3)
    unit = sampler.sample()
    assert unit is not None and unit["anchor_valid"][:, 0].all()  # class 1 is in every pair
    assert not unit["anchor_valid"].all()  # classes 2 / 3 only where both images of a pair hold them
    assert JointSampler([imgs], [labels], [imgs], [labels], 4, 3, seed=0).sample() is None


def test_tta_filter_for_a_binary_task():
    h, w = 40, 48
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.repeat(np.where((yy - 20) ** 2 + (xx - 24) ** 2 < 100, 1.0, 0.0)[None], 3, 0).astype(np.float32)

    def threshold(x):  # (N, H, W, 1) -> soft two-class threshold at 0.5, pointwise (equivariant)
        p1 = 1.0 / (1.0 + np.exp(-40.0 * (x[..., 0] - 0.5)))
        return np.stack([1.0 - p1, p1], axis=-1).astype(np.float32)

    res = tta.tta_agreement(threshold, image, 2, np.random.default_rng(0))
    assert len(res.per_class) == 1 and res.agreement > 0.9 and res.keep(0.9)
    empty = tta.tta_agreement(threshold, np.zeros_like(image), 2, np.random.default_rng(0))
    assert np.isnan(empty.agreement) and not empty.keep(0.9)  # no structure predicted: rejected
