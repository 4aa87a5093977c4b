"""Tests of data/plc_selection.py: anchors, the pairing table and the segmentation-slice rule."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from common.errors import InputError
from data.plc_selection import (
    INTER_PAIRS_FIRST,
    INTER_PAIRS_SECOND,
    assemble_contrastive_batch,
    sample_anchors,
    select_segmentation_slices,
)


# ----------------------------------------------------------------------------------------------
# Anchor sampler
# ----------------------------------------------------------------------------------------------
def test_sample_anchors_validity_and_classes():
    rng = np.random.default_rng(21)
    num_pairs, num_classes, num_samples = 3, 4, 5
    labels = rng.integers(0, num_classes, size=(2 * num_pairs, 16, 12))
    labels[1][labels[1] == 2] = 0  # class 2 absent from pair 1 first image
    labels[num_pairs + 2][labels[num_pairs + 2] == 3] = 0  # class 3 absent from pair 2 second image
    labels[0][labels[0] == 1] = 0
    labels[0][5, 7] = 1  # class 1 has a single pixel in image 0
    yx, valid = sample_anchors(labels, num_classes, num_samples, np.random.default_rng(0))
    assert yx.shape == (6, 3, 5, 2) and yx.dtype == np.int32
    assert valid.shape == (6, 3, 5) and valid.dtype == bool
    expected = np.ones((6, 3), bool)
    expected[[1, 4], 1] = False  # class 2, pair 1, both rows
    expected[[2, 5], 2] = False  # class 3, pair 2, both rows
    np.testing.assert_array_equal(valid, np.repeat(expected[..., None], 5, axis=-1))
    for n, c, p in itertools.product(range(6), range(3), range(5)):
        if valid[n, c, p]:
            assert labels[n, yx[n, c, p, 0], yx[n, c, p, 1]] == c + 1
        else:
            assert tuple(yx[n, c, p]) == (0, 0)
    assert np.all(yx[0, 0] == (5, 7))
    # Determinism given the generator.
    yx2, valid2 = sample_anchors(labels, num_classes, num_samples, np.random.default_rng(0))
    np.testing.assert_array_equal(yx, yx2)
    np.testing.assert_array_equal(valid, valid2)


def test_sample_anchors_uniform_with_replacement():
    labels = np.zeros((2, 8, 8), np.int64)
    pixels = [(0, 0), (2, 5), (7, 7), (4, 1)]
    for r, c in pixels:
        labels[:, r, c] = 1
    yx, valid = sample_anchors(labels, 2, 4000, np.random.default_rng(1))
    assert valid.all()
    for img in range(2):
        drawn = [tuple(v) for v in yx[img, 0]]
        counts = np.array([drawn.count(p) for p in pixels])
        assert counts.sum() == 4000
        assert np.all(np.abs(counts - 1000) < 120), counts  # ~4 sigma
    assert not np.array_equal(yx[0], yx[1])  # images drawn independently


def test_sample_anchors_errors():
    with pytest.raises(InputError):
        sample_anchors(np.zeros((3, 4, 4), int), 3, 2, np.random.default_rng(0))
    with pytest.raises(InputError):
        sample_anchors(np.zeros((2, 4, 4), int), 3, 0, np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# Batch assembly
# ----------------------------------------------------------------------------------------------
def _candidates(num, full, num_classes=4, size=8, start=0):
    """Slices whose image value is their id; slices in ``full`` contain every class."""
    imgs = np.stack([np.full((size, size), start + i, np.float32) for i in range(num)])
    lbls = np.zeros((num, size, size), np.int16)
    for i in range(num):
        if i in full:
            lbls[i, 0, :num_classes] = np.arange(num_classes)
        else:
            lbls[i, 0, :2] = (0, 1)  # misses classes 2..C-1
    return imgs, lbls


def test_assemble_inter_pairing_table():
    l_full, u_full = [1, 2, 4, 7, 8, 9], [0, 3, 5, 6, 10, 11]
    limgs, llbls = _candidates(12, l_full)
    uimgs, ulbls = _candidates(12, u_full, start=100)
    out = assemble_contrastive_batch(limgs, llbls, uimgs, ulbls, 4)
    assert out is not None
    imgs, lbls = out
    assert imgs.shape == (20, 8, 8) and lbls.shape == (20, 8, 8)
    lab_ids, unl_ids = [1, 2, 4, 7, 8], [100, 103, 105, 106, 110]  # first five of each, in order
    ids = {f"L{i}": lab_ids[i] for i in range(5)} | {f"U{i}": unl_ids[i] for i in range(5)}
    first = "L0 L1 L2 L3 L4 U0 U0 U2 U2 U3".split()
    second = "L0 U1 L2 U3 U4 U0 U1 U2 U3 U4".split()
    np.testing.assert_array_equal(imgs[:10, 0, 0], [ids[s] for s in first])
    np.testing.assert_array_equal(imgs[10:, 0, 0], [ids[s] for s in second])
    assert all(set(np.unique(lbl)) == {0, 1, 2, 3} for lbl in lbls)
    assert len(INTER_PAIRS_FIRST) == len(INTER_PAIRS_SECOND) == 10
    # Intra: the 10 selected slices, each paired with itself.
    imgs, _ = assemble_contrastive_batch(limgs, llbls, uimgs, ulbls, 4, inter_image=False)
    np.testing.assert_array_equal(imgs[:10, 0, 0], lab_ids + unl_ids)
    np.testing.assert_array_equal(imgs[10:, 0, 0], lab_ids + unl_ids)


def test_assemble_skips_and_rejects():
    limgs, llbls = _candidates(12, [0, 1, 2, 3])  # only 4 full slices
    uimgs, ulbls = _candidates(12, list(range(12)))
    assert assemble_contrastive_batch(limgs, llbls, uimgs, ulbls, 4) is None
    assert assemble_contrastive_batch(uimgs, ulbls, limgs, llbls, 4) is None
    # A label value outside 0..C-1 makes the label set differ from {0..C-1}.
    ulbls_bad = ulbls.copy()
    ulbls_bad[:, 1, 1] = 4
    assert assemble_contrastive_batch(uimgs, ulbls, uimgs, ulbls_bad, 4) is None
    with pytest.raises(InputError, match="bt_size"):
        assemble_contrastive_batch(uimgs, ulbls, uimgs, ulbls, 4, bt_size=12)


def test_select_segmentation_slices():
    lbls = np.zeros((30, 4, 4), np.int16)
    rich = [i for i in range(30) if i % 3 != 1]
    for i in rich:
        lbls[i, 0, :3] = (0, 1, 2)
    idx = select_segmentation_slices(lbls, 3, batch_size=20)
    np.testing.assert_array_equal(idx, rich[:20])
    assert select_segmentation_slices(lbls, 3, batch_size=21) is None
    np.testing.assert_array_equal(select_segmentation_slices(lbls, 1, batch_size=5), np.arange(5))


# ----------------------------------------------------------------------------------------------
# Benchmark script smoke test
# ----------------------------------------------------------------------------------------------
