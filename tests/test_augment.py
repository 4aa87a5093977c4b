"""Tests of data.augment against independent NumPy / SciPy / scikit-image references (fixed draws)."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf
from skimage import transform

from data import augment as A
from common.errors import InputError

H, W = 40, 48  # non-square on purpose: catches row/column mix-ups


def _smooth_image(seed=0, n=1, h=H, w=W):
    rng = np.random.default_rng(seed)
    imgs = np.stack([ndi.gaussian_filter(rng.random((h, w)), 2.0) * 3.0 for _ in range(n)])
    return imgs.astype(np.float32)  # (n, h, w)


def _labels_from(img):
    return np.digitize(img, np.quantile(img, [0.3, 0.6, 0.85])).astype(np.int32)  # 0..3


def _crop_or_pad(s, nx, ny):
    """Centre crop/pad of the original dataloader, written from its description."""
    x, y = s.shape
    out = np.zeros((nx, ny), dtype=np.float64)
    xs, ys, xc, yc = (x - nx) // 2, (y - ny) // 2, (nx - x) // 2, (ny - y) // 2
    if x > nx and y > ny:
        return s[xs:xs + nx, ys:ys + ny]
    if x <= nx and y > ny:
        out[xc:xc + x, :] = s[:, ys:ys + ny]
    elif x > nx and y <= ny:
        out[:, yc:yc + y] = s[xs:xs + nx, :]
    else:
        out[xc:xc + x, yc:yc + y] = s
    return out


def _ref_rotate(img, angle, order):
    return ndi.rotate(img, angle, axes=(1, 0), reshape=False, order=order)


def _ref_scale(img, scale, order):
    h, w = img.shape
    r = transform.rescale(img, scale, order=order, preserve_range=True, mode="constant", anti_aliasing=False)
    return _crop_or_pad(r, h, w)


def _interior_rotate(angle):
    return _ref_rotate(np.ones((H, W)), angle, 1) > 1 - 1e-9


def _interior_scale(scale):
    return _ref_scale(np.ones((H, W)), scale, 1) > 1 - 1e-9


def _apply(transforms, img, interp, clip=False):
    x = tf.constant(np.asarray(img, np.float32)[None, :, :, None])
    out = A.apply_transforms(x, transforms, interp).numpy()[0, :, :, 0]
    if clip:  # skimage's default output clip, done by affine_augment for the rescale option
        out = np.where(out == 0, 0, np.clip(out, img.min(), img.max()))
    return out


@pytest.mark.parametrize("angle", [-15.0, -4.2, 7.3, 14.9])
def test_rotation_matches_scipy(angle):
    img = _smooth_image()[0]
    lab = _labels_from(img)
    tr = A.rotation_transforms(tf.constant([angle], tf.float64), H, W)
    inside = _interior_rotate(angle)
    out = _apply(tr, img, "BILINEAR")
    np.testing.assert_allclose(out[inside], _ref_rotate(img.astype(np.float64), angle, 1)[inside], atol=1e-5)
    lout = np.round(_apply(tr, lab, "NEAREST"))
    assert (lout == _ref_rotate(lab, angle, 0))[inside].mean() > 0.98  # only rounding ties may differ
    # constant 0 fill: pixels whose source is over 1 px outside the image read 0 (within 1 px TF
    # interpolates with the 0 fill while scipy's 'constant' mode returns 0 outright)
    far = ~ndi.binary_dilation(_ref_rotate(np.ones((H, W)), angle, 1) > 0, iterations=2)
    assert np.all(out[far] == 0) and (abs(angle) < 10 or far.sum() > 0)


@pytest.mark.parametrize("k", range(8))
def test_k45_rotation_matches_scipy_and_is_exact_for_90(k):
    img = _smooth_image(1)[0]
    lab = _labels_from(img)
    tr = A.rotation_transforms(tf.constant([45.0 * k], tf.float64), H, W, exact45=True)
    out = _apply(tr, img, "BILINEAR")
    lout = np.round(_apply(tr, lab, "NEAREST"))
    ref = _ref_rotate(img.astype(np.float64), 45 * k, 1)
    lref = _ref_rotate(lab, 45 * k, 0)
    inside = _interior_rotate(45 * k)
    if k % 2 == 0:  # pure pixel permutation (+ zero fill for the non-square corners)
        np.testing.assert_array_equal(out, ref.astype(np.float32))
        np.testing.assert_array_equal(lout, lref)
        if k == 4:
            np.testing.assert_array_equal(out, img[::-1, ::-1])
    else:
        np.testing.assert_allclose(out[inside], ref[inside], atol=1e-5)
        assert (lout == lref)[inside].mean() > 0.98


@pytest.mark.parametrize("scale", [0.95, 0.97, 0.99, 1.0, 1.02, 1.05])
def test_scale_matches_skimage_rescale_and_crop_or_pad(scale):
    img = _smooth_image(2)[0]
    lab = _labels_from(img)
    tr = A.scale_transforms(tf.constant([scale], tf.float64), H, W)
    out = _apply(tr, img, "BILINEAR", clip=True)
    ref = _ref_scale(img.astype(np.float64), scale, 1)
    inside = _interior_scale(scale)
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-5)
    np.testing.assert_array_equal(out[~inside & (ref == 0)], 0)  # zero padding for scale < 1
    lout = np.round(_apply(tr, lab, "NEAREST"))
    assert (lout == _ref_scale(lab, scale, 0)).mean() > 0.98


def test_flip_is_exact():
    img = _smooth_image(3)[0]
    tr = A.fliplr_transforms(tf.constant([True, False]), W)
    x = tf.constant(np.stack([img, img])[..., None])
    out = A.apply_transforms(x, tr, "BILINEAR").numpy()[..., 0]
    np.testing.assert_array_equal(out[0], np.fliplr(img))
    np.testing.assert_array_equal(out[1], img)


def test_affine_augment_matches_reference_on_its_draws():
    n = 30
    imgs = _smooth_image(4, n)
    imgs[5] = 0.0005  # below the 0.001 threshold: never augmented
    labs = np.stack([_labels_from(im) for im in imgs])
    seed = tf.constant([3, 11], tf.int64)
    out, lout = A.affine_augment(imgs[..., None], labs, seed)
    out, lout = out.numpy()[..., 0], lout.numpy()
    assert out.dtype == np.float32 and lout.dtype == np.int32 and out.shape == imgs.shape
    d = {k: v.numpy() for k, v in A.affine_draws(seed, n).items()}
    assert set(d["option"][np.arange(n) != 5]) == {0, 1, 2, 3, 4}  # this seed exercises every option
    for i in range(n):
        img, lab, opt = imgs[i].astype(np.float64), labs[i], d["option"][i]
        inside = np.ones((H, W), bool)
        if i == 5 or opt == 4:
            ref, lref = img, lab
        elif opt == 0:
            ref, lref = _ref_rotate(img, d["angle"][i], 1), _ref_rotate(lab, d["angle"][i], 0)
            inside = _interior_rotate(d["angle"][i])
        elif opt == 1:
            assert round(d["scale"][i], 2) == d["scale"][i] and 0.95 <= d["scale"][i] <= 1.05
            ref, lref = _ref_scale(img, d["scale"][i], 1), _ref_scale(lab, d["scale"][i], 0)
            inside = _interior_scale(d["scale"][i])
        elif opt == 2:
            ref, lref = (np.fliplr(img), np.fliplr(lab)) if d["flip"][i] else (img, lab)
        else:
            ang = 45 * d["k"][i]
            ref, lref = _ref_rotate(img, ang, 1), _ref_rotate(lab, ang, 0)
            inside = _interior_rotate(ang)
        np.testing.assert_allclose(out[i][inside], ref[inside], atol=1e-5, err_msg=f"image {i} option {opt}")
        assert (lout[i] == lref)[inside].mean() > 0.98, (i, opt)
    # deterministic per seed, different for another seed
    out2, _ = A.affine_augment(imgs[..., None], labs, seed)
    np.testing.assert_array_equal(out, out2.numpy()[..., 0])
    out3, _ = A.affine_augment(imgs[..., None], labs, tf.constant([4, 11], tf.int64))
    assert not np.array_equal(out, out3.numpy()[..., 0])


def test_affine_draw_distribution():
    d = {k: v.numpy() for k, v in A.affine_draws(tf.constant([0, 1]), 4000).items()}
    counts = np.bincount(d["option"], minlength=5) / 4000
    np.testing.assert_allclose(counts, 0.2, atol=0.03)
    assert d["angle"].min() >= -15 and d["angle"].max() < 15
    assert set(np.round(d["scale"] * 100).astype(int)) == set(range(95, 106))
    assert set(d["k"]) == set(range(8)) and abs(d["flip"].mean() - 0.5) < 0.05


# ---------------------------------------------------------------------------------------------
# deformation
# ---------------------------------------------------------------------------------------------
def _ref_warp(image, flow):
    """Plain-loop float64 reference of dense_image_warp (TF-Addons semantics)."""
    n, h, w, c = image.shape
    out = np.zeros(image.shape, np.float64)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                qy, qx = y - flow[b, y, x, 0], x - flow[b, y, x, 1]
                fy = min(max(np.floor(qy), 0), h - 2)
                fx = min(max(np.floor(qx), 0), w - 2)
                ay, ax = min(max(qy - fy, 0), 1), min(max(qx - fx, 0), 1)
                fy, fx = int(fy), int(fx)
                top = image[b, fy, fx] * (1 - ax) + image[b, fy, fx + 1] * ax
                bot = image[b, fy + 1, fx] * (1 - ax) + image[b, fy + 1, fx + 1] * ax
                out[b, y, x] = top * (1 - ay) + bot * ay
    return out


def test_flow_matches_skimage_cubic_resize():
    grids = A.deformation_grids(tf.constant([1, 2]), 3, sigma=5.0).numpy()  # (3, 2, 9)
    assert grids.shape == (3, 2, 9)
    flow = A.flow_from_grids(grids, 20, 24).numpy()
    for i in range(3):
        for ch in range(2):
            grid = grids[i, ch].reshape(3, 3).astype(np.float64)
            ref = transform.resize(grid, (20, 24), order=3, mode="reflect")  # the original call (clip=True)
            np.testing.assert_allclose(flow[i, :, :, ch], ref, atol=1e-4)


def test_grid_statistics():
    g = A.deformation_grids(tf.constant([5, 6]), 2000, sigma=5.0).numpy()
    assert abs(g.mean()) < 0.1 and abs(g.std() - 5.0) < 0.1


def test_dense_image_warp_matches_loop_reference():
    rng = np.random.default_rng(7)
    img = rng.random((2, 9, 11, 3)).astype(np.float32)
    flow = (rng.normal(size=(2, 9, 11, 2)) * 4).astype(np.float32)  # many points leave the image
    out = A.dense_image_warp(img, flow).numpy()
    np.testing.assert_allclose(out, _ref_warp(img.astype(np.float64), flow.astype(np.float64)), atol=1e-5)
    # integer flow = shift with border replication
    shift = np.zeros((1, 9, 11, 2), np.float32)
    shift[..., 1] = 2.0
    out = A.dense_image_warp(img[:1], shift).numpy()[0]
    np.testing.assert_allclose(out[:, 2:], img[0, :, :-2], atol=1e-6)
    np.testing.assert_allclose(out[:, 0], img[0, :, 0], atol=1e-6)


def test_random_deformation_soft_labels_and_mixing():
    n, c = 12, 4
    imgs = _smooth_image(8, n, 24, 28)[..., None]
    labs = np.stack([_labels_from(im[..., 0]) for im in imgs])
    onehot = tf.one_hot(labs, c)
    seed = tf.constant([9, 9], tf.int64)
    x_all, y_all = A.random_deformation(imgs, onehot, seed, sigma=5.0, mix=False)
    x_mix, y_mix = A.random_deformation(imgs, onehot, seed, sigma=5.0, mix=True)
    x_all, y_all, x_mix, y_mix = (t.numpy() for t in (x_all, y_all, x_mix, y_mix))
    np.testing.assert_allclose(y_all.sum(-1), 1.0, atol=1e-5)
    assert np.all(y_all >= -1e-6) and np.any((y_all > 0.01) & (y_all < 0.99))  # soft labels
    # reference: same flow, loop warp
    s_flow, s_mix, _ = A.split_seed(seed, 3)
    flow = A.deformation_flow(s_flow, n, 24, 28, 5.0).numpy()
    np.testing.assert_allclose(x_all, _ref_warp(imgs.astype(np.float64), flow), atol=1e-4)
    n_orig = int(A.mix_count(s_mix, n))
    assert 1 <= n_orig <= n - 2
    np.testing.assert_array_equal(x_mix[:n_orig], imgs[:n_orig])
    np.testing.assert_array_equal(y_mix[:n_orig], onehot.numpy()[:n_orig])
    np.testing.assert_array_equal(x_mix[n_orig:], x_all[n_orig:])
    np.testing.assert_array_equal(y_mix[n_orig:], y_all[n_orig:])


def test_mix_count_range():
    counts = {int(A.mix_count(tf.constant([i, 0]), 20)) for i in range(300)}
    assert counts == set(range(1, 19))
    assert int(A.mix_count(tf.constant([1, 0]), 2)) == 1


def test_random_deformation_with_intensity_applies_contrast_net_to_deformed_rows():
    n = 8
    imgs = _smooth_image(9, n, 16, 16)[..., None]
    onehot = tf.one_hot(np.zeros((n, 16, 16), np.int32), 2)
    seed = tf.constant([2, 3])
    x_def, _ = A.random_deformation(imgs, onehot, seed, mix=False)
    x_int, _ = A.random_deformation(imgs, onehot, seed, mix=False, intensity=True)
    _, _, s_int = A.split_seed(seed, 3)
    np.testing.assert_allclose(x_int, A.intensity_contrast_brightness(x_def, s_int), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# intensity
# ---------------------------------------------------------------------------------------------
def test_brightness_contrast_reference_and_shared_draw():
    imgs = _smooth_image(10, 5, 12, 14)[..., None] * 0.5
    seed = tf.constant([4, 2])
    out = A.brightness_contrast(imgs, seed).numpy()
    u = float(A.intensity_draw(seed))
    delta, f = -0.3 + 0.6 * u, 0.7 + 0.6 * u
    ref = np.empty_like(imgs, dtype=np.float64)
    for i in range(5):
        y = imgs[i].astype(np.float64) + delta
        ref[i] = np.clip((y - y.mean()) * f + y.mean(), 0, 1.5)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # a single draw for the whole batch: constant images all move by the same delta
    const = np.linspace(0.4, 0.9, 6, dtype=np.float32)[:, None, None, None] * np.ones((6, 5, 5, 1), np.float32)
    shifted = A.brightness_contrast(const, seed).numpy() - const
    np.testing.assert_allclose(shifted, delta, atol=1e-6)
    big = A.brightness_contrast(np.full((1, 4, 4, 1), 5.0, np.float32), seed).numpy()
    assert big.max() == 1.5


def test_intensity_contrast_brightness_reference():
    imgs = _smooth_image(11, 6, 10, 10)[..., None]
    seed = tf.constant([8, 1])
    out = A.intensity_contrast_brightness(imgs, seed).numpy()
    u = float(A.intensity_draw(seed))
    f, delta = 0.8 + 0.4 * u, -0.1 + 0.2 * u
    for i in range(6):
        x = imgs[i].astype(np.float64)
        ref = (x - x.mean()) * f + x.mean() if i < 3 else x + delta
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# crop and resize
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box,box_y,offsets",
    [(33, 33, (3, 23)), (40, 25, (3, 23)), (60, 60, (10, 50))],  # last: crops truncated at the border
)
def test_crop_and_resize_matches_skimage(box, box_y, offsets):
    h = w = 64
    imgs = _smooth_image(12, 6, h, w)[..., None]
    seed = tf.constant([5, 5])
    out = A.crop_and_resize(imgs, seed, bbox_dim=box, bbox_dim_y=box_y, offset_range=offsets).numpy()
    xs, ys = (t.numpy() for t in A.crop_draws(seed, 6, offsets))
    assert xs.min() >= offsets[0] and xs.max() < offsets[1]
    for i in range(6):
        crop = imgs[i, xs[i]:xs[i] + box, ys[i]:ys[i] + box_y, 0].astype(np.float64)
        ref = transform.resize(crop, (h, w), order=1)  # the original call, skimage defaults
        np.testing.assert_allclose(out[i, :, :, 0], ref, atol=1e-5)
    if box == 60:
        assert np.any(xs + box > h)  # the truncated case was exercised


def test_crop_and_resize_errors_and_params():
    with pytest.raises(InputError):
        A.crop_and_resize(np.zeros((1, 64, 64, 1), np.float32), tf.constant([0, 0]))  # offsets up to 69 > 63
    assert A.crop_params_for_size(192, 192) == {"offset_range": (10, 70), "bbox_dim": 100, "bbox_dim_y": 100}
    p = A.crop_params_for_size(64, 64)
    out = A.crop_and_resize(np.ones((2, 64, 64, 1), np.float32), tf.constant([0, 0]), **p).numpy()
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_ops_work_inside_tf_function():
    imgs = tf.constant(_smooth_image(13, 4, 16, 16)[..., None])
    labs = tf.zeros((4, 16, 16), tf.int32)

    @tf.function
    def f(seed):
        x, y = A.affine_augment(imgs, labs, seed)
        x, y1 = A.random_deformation(x, tf.one_hot(y, 3), seed)
        x = A.brightness_contrast(A.crop_and_resize(x, seed, 8, 8, (1, 5)), seed)
        return x, y1

    x1, y1 = f(tf.constant([1, 2], tf.int64))
    x2, _ = f(tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    assert x1.shape == (4, 16, 16, 1) and y1.shape == (4, 16, 16, 3)
