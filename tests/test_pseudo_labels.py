"""Tests of pseudolabels.generate on tiny fake volumes with fake networks."""
from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from common.errors import InputError
from data.store import Volume
from pseudolabels import crf as crf_lib
from pseudolabels import generate as pl

C = 3
SMALL_CRF = (0.01, 0.5, 10.0, 3.0, 30.0, 5)


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    num_classes: int = C
    crf_params: tuple = SMALL_CRF
    target_resolution: tuple = (2.5, 2.5)


def _phantom(depth: int, h: int = 24, w: int = 32, bright: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2.5) ** 2
    img = np.where(r2 < 9**2, 0.5, 0.0) + np.where(r2 < 4**2, 0.5, 0.0)  # background 0, ring 0.5, disc 1
    return (np.repeat(img[None], depth, axis=0) * bright).astype(np.float32)  # (D, H, W)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def threshold_model(x: np.ndarray) -> np.ndarray:
    """Equivariant fake network: soft thresholds of the intensity. (N, H, W, 1) -> (N, H, W, C)."""
    assert x.ndim == 4 and x.shape[-1] == 1 and x.dtype == np.float32
    return _softmax(-20.0 * (x - np.linspace(0.0, 1.0, C)) ** 2)


def bright_is_noise_model(x: np.ndarray) -> np.ndarray:
    """Like threshold_model, but outputs noise for images brighter than 1.5 (not equivariant)."""
    if x.max() > 1.5:
        rng = np.random.default_rng(int(x.sum() * 100) % 2**31)
        return rng.dirichlet(np.ones(C), size=x.shape[:3]).astype(np.float32)
    return threshold_model(x)


def _volumes():
    meta = {"target_resolution": [2.5, 2.5], "spacing": [1.2, 1.2, 8.0]}
    return [Volume("001", _phantom(3), None, dict(meta)), Volume("007", _phantom(2), None, dict(meta))]


def _strict_json(path):
    def bad(value):
        raise AssertionError(f"non-strict JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_argmax_labels_geometry_and_manifest(tmp_path):
    vols = _volumes()
    manifest = pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path, crf=False, progress=False)
    assert manifest["kept"] == ["001", "007"] and manifest["rejected"] == []
    assert manifest["crf"] is False and manifest["crf_params"] is None and manifest["tta_filter"] is False
    assert _strict_json(tmp_path / "manifest.json") == json.loads(json.dumps(manifest))
    for vol in vols:
        img = nib.load(str(tmp_path / f"{vol.id}.nii.gz"))
        assert img.shape == (24, 32, vol.image.shape[0])  # (H, W, D) like image.nii.gz
        assert img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.affine, np.diag([2.5, 2.5, 8.0, 1.0]))
        expected = threshold_model(vol.image[..., None]).argmax(-1)  # (D, H, W)
        np.testing.assert_array_equal(np.asarray(img.dataobj), expected.transpose(1, 2, 0))
        assert set(np.unique(expected)) == {0, 1, 2}
        rec = manifest["volumes"][vol.id]
        assert rec["kept"] and rec["file"] == f"{vol.id}.nii.gz"
        assert sum(rec["label_counts"]) == vol.image.size
        assert {"predict_s", "write_s", "total_s"} <= set(rec["timings"])
    assert manifest["timings"]["slices_labelled"] == 5
    loaded = pl.load_pseudo_labels(tmp_path, pl.read_manifest(tmp_path)["kept"])
    for vol in vols:
        assert loaded[vol.id].shape == vol.image.shape and loaded[vol.id].dtype == np.int16
        np.testing.assert_array_equal(loaded[vol.id], threshold_model(vol.image[..., None]).argmax(-1))


def test_unknown_slice_spacing_is_1mm_and_said(tmp_path, capsys):
    """Issue 20: the ssl4mis layout records a null spacing (and a volume may record none): the
    pseudo-label files say 1 mm along those axes, and one line says so (it used to crash on null)."""
    vols = [Volume("001", _phantom(3), None, {"target_resolution": [2.5, 2.5], "spacing": [None, None, None]}),
            Volume("007", _phantom(2), None, {"target_resolution": [2.5, 2.5]}),
            Volume("009", _phantom(2), None, {"target_resolution": [2.5, 2.5], "spacing": [1.2, 1.2, 8.0]})]
    capsys.readouterr()
    pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path, crf=False, progress=False)
    for vid, through in (("001", 1.0), ("007", 1.0), ("009", 8.0)):
        np.testing.assert_allclose(nib.load(str(tmp_path / f"{vid}.nii.gz")).affine, np.diag([2.5, 2.5, through, 1.0]))
    assert capsys.readouterr().err.splitlines() == [
        f"warning: pseudo-labels in {tmp_path}: the voxel spacing of 2 volume(s) is unknown (001, 007; no data_dir "
        "image and none recorded): their NIfTI files say 1 mm along those axes"]


def test_affine_from_data_dir_and_from_meta(tmp_path):
    vol = _volumes()[0]
    data_dir = tmp_path / "data"
    (data_dir / vol.id).mkdir(parents=True)
    affine = np.array([[0, -2.5, 0, 10], [2.5, 0, 0, -4], [0, 0, 8, 3], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(vol.image.transpose(1, 2, 0), affine), str(data_dir / vol.id / "image.nii.gz"))
    pl.generate_pseudo_labels(threshold_model, [vol], FakeConfig(), tmp_path / "a", crf=False, progress=False,
                              data_dir=data_dir)
    np.testing.assert_allclose(nib.load(str(tmp_path / "a" / "001.nii.gz")).affine, affine)

    # Without data_dir the preprocessed affine is recomputed from meta exactly as data.preprocess does.
    import configs
    from data.volume_prep import preprocess_volume, preprocessed_affine

    raw = np.random.default_rng(0).random((70, 50, 2)).astype(np.float32)
    image, _, meta = preprocess_volume(raw, (2.0, 3.0, 9.0), configs.get_config("synthetic"))
    native_affine = np.array([[-2.0, 0, 0, 5], [0, 3.0, 0, 6], [0, 0, 9.0, 7], [0, 0, 0, 1]])
    meta["affine"] = native_affine.tolist()
    vol2 = Volume("x", image, None, meta)
    pl.generate_pseudo_labels(threshold_model, [vol2], FakeConfig(), tmp_path / "b", crf=False, progress=False)
    out = nib.load(str(tmp_path / "b" / "x.nii.gz"))
    assert out.shape == (64, 64, 2)
    np.testing.assert_allclose(out.affine, preprocessed_affine(native_affine, meta))

    bad = tmp_path / "bad"
    (bad / vol.id).mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 3), np.float32), np.eye(4)), str(bad / vol.id / "image.nii.gz"))
    with pytest.raises(InputError, match="differs"):
        pl.generate_pseudo_labels(threshold_model, [vol], FakeConfig(), tmp_path / "c", crf=False,
                                  progress=False, data_dir=bad)


def test_crf_labels_match_crf_module_and_workers(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.15, size=(3, 24, 32)).astype(np.float32)
    vols = [Volume("a", _phantom(3) + noise, None, {}), Volume("b", _phantom(2) + noise[:2], None, {})]
    m1 = pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path / "w1", crf=True, workers=1,
                                   progress=False)
    m2 = pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path / "w2", crf=True, workers=2,
                                   progress=False)
    assert m1["crf"] is True and m1["crf_params"] == crf_lib.CRFParams.from_sequence(SMALL_CRF).as_dict()
    assert m2["workers"] == 2
    for vol in vols:
        probs = threshold_model(vol.image[..., None])
        expected = crf_lib.crf_volume(probs, vol.image, SMALL_CRF)  # (D, H, W)
        assert m1["volumes"][vol.id]["changed_by_crf"] == int((expected != probs.argmax(-1)).sum()) > 0
        for d in ("w1", "w2"):
            got = pl.load_pseudo_labels(tmp_path / d, [vol.id])[vol.id]
            np.testing.assert_array_equal(got, expected)
        assert "crf_s" in m1["volumes"][vol.id]["timings"]


def test_tta_filter_rejects_non_equivariant_volume(tmp_path):
    vols = [Volume("good", _phantom(3), None, {}), Volume("bright", _phantom(3, bright=2.0), None, {})]
    (tmp_path / "bright.nii.gz").write_bytes(b"stale")  # left by an earlier run
    m = pl.generate_pseudo_labels(bright_is_noise_model, vols, FakeConfig(), tmp_path, crf=False,
                                  tta_filter=True, f1_threshold=0.9, seed=3, progress=False)
    assert m["kept"] == ["good"] and m["rejected"] == ["bright"]
    good, bright = m["volumes"]["good"], m["volumes"]["bright"]
    assert good["agreement"] > 0.9 and bright["agreement"] < 0.9
    assert len(good["per_class_f1"]) == C - 1 and len(good["augmentations"]) == 2
    assert not (good["augmentations"][0]["kind"] == "flip" and good["augmentations"][1]["kind"] == "flip")
    assert bright["kept"] is False and "tta_s" in bright["timings"]
    assert (tmp_path / "good.nii.gz").exists() and not (tmp_path / "bright.nii.gz").exists()
    assert m["tta_filter"] is True and m["f1_threshold"] == 0.9 and m["seed"] == 3
    # Same seed -> same augmentations per volume, whatever the order of the volumes.
    m_rev = pl.generate_pseudo_labels(bright_is_noise_model, vols[::-1], FakeConfig(), tmp_path / "rev",
                                      crf=False, tta_filter=True, seed=3, progress=False)
    for vid in ("good", "bright"):
        assert m_rev["volumes"][vid]["augmentations"] == m["volumes"][vid]["augmentations"]


def test_all_rejected_returns_empty_kept_list(tmp_path):
    vols = _volumes()
    pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path, crf=False, progress=False)
    assert (tmp_path / "001.nii.gz").exists()
    # Agreement can never exceed 1, so a threshold of 1 rejects everything; stale files are removed.
    m = pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path, crf=True, tta_filter=True,
                                  f1_threshold=1.0, progress=False)
    assert m["kept"] == [] and m["rejected"] == ["001", "007"]
    assert not list(tmp_path.glob("*.nii.gz"))
    assert pl.read_manifest(tmp_path)["kept"] == []
    assert pl.load_pseudo_labels(tmp_path, []) == {}

    # A network that predicts only background has an undefined agreement: rejected, written as null.
    def background(x):
        return np.tile(np.array([1.0, 0.0, 0.0], np.float32), x.shape[:3] + (1,))

    m = pl.generate_pseudo_labels(background, vols, FakeConfig(), tmp_path / "bg", tta_filter=True, progress=False)
    assert m["kept"] == [] and m["volumes"]["001"]["agreement"] is None
    assert m["volumes"]["001"]["per_class_f1"] == [None, None]
    _strict_json(tmp_path / "bg" / "manifest.json")

    m = pl.generate_pseudo_labels(threshold_model, [], FakeConfig(), tmp_path / "empty", progress=False)
    assert m["kept"] == [] and m["rejected"] == [] and (tmp_path / "empty" / "manifest.json").exists()


def test_errors(tmp_path):
    vols = _volumes()
    pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(), tmp_path, crf=False, progress=False)
    assert (tmp_path / "manifest.json").exists()
    with pytest.raises(InputError, match="shape"):
        pl.generate_pseudo_labels(lambda x: np.ones(x.shape[:3] + (2,), np.float32) / 2, vols, FakeConfig(),
                                  tmp_path, crf=False, progress=False)
    assert not (tmp_path / "manifest.json").exists()  # an interrupted run leaves no manifest
    with pytest.raises(InputError, match="not finite"):
        pl.generate_pseudo_labels(lambda x: np.full(x.shape[:3] + (C,), np.nan, np.float32), vols, FakeConfig(),
                                  tmp_path, crf=False, progress=False)
    with pytest.raises(ValueError, match="softmax"):  # logits instead of probabilities
        pl.generate_pseudo_labels(lambda x: np.full(x.shape[:3] + (C,), 3.0, np.float32), vols, FakeConfig(),
                                  tmp_path, crf=False, progress=False)
    with pytest.raises(InputError, match="duplicate"):
        pl.generate_pseudo_labels(threshold_model, vols + vols[:1], FakeConfig(), tmp_path, progress=False)
    with pytest.raises(InputError, match="not found"):
        pl.load_pseudo_labels(tmp_path, ["nope"])
    with pytest.raises(InputError, match="manifest not found"):
        pl.read_manifest(tmp_path / "none")
    with pytest.raises(InputError, match="crf_params"):
        pl.generate_pseudo_labels(threshold_model, vols, FakeConfig(crf_params=(1, 2)), tmp_path, progress=False)


def _np_fg_dice(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Independent reference: mean over foreground classes present in gt or pred of 2|A&B|/(|A|+|B|)."""
    scores = []
    for c in range(1, num_classes):
        a, b = gt == c, pred == c
        if a.sum() + b.sum():
            scores.append(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return float(np.mean(scores))


def test_dice_against_labels_of_the_pool_with_and_without_crf(tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.15, size=(3, 24, 32)).astype(np.float32)
    truth = threshold_model(_phantom(3)[..., None]).argmax(-1)  # (D, H, W) the clean phantom's classes
    truth[0, :4] = 2  # a few pixels no prediction gets right
    labeled = Volume("a", _phantom(3) + noise, truth.astype(np.int16), {})
    unlabeled = Volume("b", _phantom(2), None, {})
    m = pl.generate_pseudo_labels(threshold_model, [labeled, unlabeled], FakeConfig(), tmp_path, crf=True,
                                  workers=1, progress=False)
    probs = threshold_model(labeled.image[..., None])  # (D, H, W, C)
    crf_labels = pl.load_pseudo_labels(tmp_path, ["a"])["a"]
    rec = m["volumes"]["a"]["dice_vs_label"]
    assert rec["argmax"] == pytest.approx(_np_fg_dice(truth, probs.argmax(-1), C), abs=1e-12)
    assert rec["final"] == pytest.approx(_np_fg_dice(truth, crf_labels, C), abs=1e-12)
    assert rec["final"] != rec["argmax"]  # the CRF changed labels, and the score sees it
    assert "dice_vs_label" not in m["volumes"]["b"]  # no labels: nothing scored
    assert m["mean_dice_vs_label"] == {"final": rec["final"], "argmax": rec["argmax"], "volumes": 1}
    assert _strict_json(tmp_path / "manifest.json")["mean_dice_vs_label"]["volumes"] == 1

    none = pl.generate_pseudo_labels(threshold_model, [unlabeled], FakeConfig(), tmp_path / "n", crf=False,
                                     progress=False)
    assert none["mean_dice_vs_label"] is None


def test_crf_kernel_is_converted_to_the_grid_in_millimetres(tmp_path):
    """Parameters defined on a 1.25 mm grid, volumes on 2.5 mm: the CRF runs with half the pixel stds."""
    @dataclasses.dataclass(frozen=True)
    class MmConfig(FakeConfig):
        crf_reference_mm: tuple = (1.25, 1.25)

    rng = np.random.default_rng(1)
    vol = Volume("a", _phantom(2) + rng.normal(0, 0.15, size=(2, 24, 32)).astype(np.float32), None, {})
    m = pl.generate_pseudo_labels(threshold_model, [vol], MmConfig(), tmp_path, crf=True, workers=1, progress=False)
    converted = crf_lib.CRFParams.from_sequence(SMALL_CRF).at_pixel_size((1.25, 1.25), (2.5, 2.5))
    assert converted.g_sxy == pytest.approx(1.5)
    assert m["crf_params"] == converted.as_dict()
    assert m["crf_params_defined_at_mm"] == [1.25, 1.25] and m["grid_mm"] == [2.5, 2.5]
    expected = crf_lib.crf_volume(threshold_model(vol.image[..., None]), vol.image, converted)
    np.testing.assert_array_equal(pl.load_pseudo_labels(tmp_path, ["a"])["a"], expected)
