"""data.synthetic: determinism, exact ACDC layout, plausible anatomy, fits the synthetic config."""
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import configs
from data import preprocess, readers, store, synthetic
from common.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "raw"
    synthetic.generate(out, num_patients=5, seed=3)
    return out


def test_deterministic_per_seed_and_patient():
    a, b = synthetic.make_patient(7, 2), synthetic.make_patient(7, 2)
    assert a.info == b.info and a.group == "DCM"
    np.testing.assert_array_equal(a.affine, b.affine)
    for f in a.frames:
        np.testing.assert_array_equal(a.frames[f][0], b.frames[f][0])
        np.testing.assert_array_equal(a.frames[f][1], b.frames[f][1])
    c = synthetic.make_patient(8, 2)
    assert c.info != a.info or not np.array_equal(c.affine, a.affine)


def test_acdc_layout_and_info(dataset):
    root = dataset / "training"
    assert sorted(os.listdir(root)) == [f"patient{i:03d}" for i in range(1, 6)]
    for i in range(1, 6):
        pdir = root / f"patient{i:03d}"
        info = readers.parse_info_cfg(pdir / "Info.cfg")
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        assert info["Group"] == synthetic.GROUPS[(i - 1) % 5]
        ed, es = int(info["ED"]), int(info["ES"])
        assert 1 <= ed < es <= int(info["NbFrame"])
        assert sorted(os.listdir(pdir)) == sorted(
            ["Info.cfg"] + [f"patient{i:03d}_frame{f:02d}{s}.nii.gz" for f in (ed, es) for s in ("", "_gt")])
    sources = readers.find_volumes("acdc", dataset, phases=("ED", "ES"))
    assert [s.id for s in sources] == ["001", "001_ES", "002", "002_ES", "003", "003_ES", "004", "004_ES",
                                       "005", "005_ES"]
    for src in sources:
        vol = readers.read_volume(src, num_classes=4)
        h0, w0, d = vol.image.shape
        assert 6 <= d <= 12 and 80 <= h0 <= 210 and 80 <= w0 <= 210
        sx, sy, sz = vol.spacing
        assert 1.2 <= sx <= 1.9 and sx == pytest.approx(sy) and 5.0 <= sz <= 10.0
        assert not np.allclose(vol.affine[:3, :3], np.diag(np.diag(vol.affine[:3, :3])))  # oblique
        assert set(np.unique(vol.label)) <= {0, 1, 2, 3}
        if not src.id.endswith("_ES"):
            assert set(np.unique(vol.label)) == {0, 1, 2, 3}
        assert nib.load(str(src.image_path)).get_data_dtype() == np.int16


def test_anatomy_changes_with_phase_and_group():
    volumes = {}
    for n in range(1, 11):
        p = synthetic.make_patient(0, n)
        ed, es = sorted(p.frames, key=lambda f: f != p.info["ED"])
        voxel = float(np.prod(nib.affines.voxel_sizes(p.affine)))
        lv_ed = np.sum(p.frames[ed][1] == 3) * voxel
        lv_es = np.sum(p.frames[es][1] == 3) * voxel
        assert lv_es < lv_ed  # contraction
        volumes.setdefault(p.group, []).append(lv_ed / 1000.0)  # ml
    assert min(volumes["DCM"]) > max(volumes["HCM"])  # dilated vs hypertrophic cavities


@pytest.fixture(scope="module")
def preprocessed(dataset):
    out = dataset.parent / "pp"
    preprocess.preprocess_dataset("synthetic", dataset, out, phases=("ED",))
    return out


def test_heart_fits_synthetic_crop(preprocessed):
    info = store.read_dataset_json(preprocessed)
    assert info["image_size"] == [64, 64] and info["dataset"] == "synthetic"
    for vid in info["ids"]:
        v = store.load_volume(preprocessed, vid)
        fg = v.label > 0
        assert not fg[:, :2].any() and not fg[:, -2:].any() and not fg[:, :, :2].any() and not fg[:, :, -2:].any()
        native = np.asanyarray(store.load_native_label(preprocessed, vid).dataobj)
        assert native.max() == 3


def test_render_pngs(preprocessed, tmp_path):
    import matplotlib.image

    from data import render

    paths = render.render(preprocessed, tmp_path / "png", ids=["002", "004"], num_slices=3)
    assert [p.name for p in paths] == ["002.png", "004.png"]
    png = matplotlib.image.imread(str(paths[0]))
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 200
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["002.png", "004.png"]
    with pytest.raises(InputError, match="num_slices"):
        render.render(preprocessed, tmp_path / "png", ids=["002"], num_slices=0)


def test_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "data.synthetic", "--out_dir", str(tmp_path / "d"),
                        "--num_patients", "2", "--seed", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 synthetic patients" in r.stdout
    assert sorted(os.listdir(tmp_path / "d" / "training")) == ["patient001", "patient002"]
    p2 = synthetic.make_patient(5, 2)
    ed = p2.info["ED"]
    disk = nib.load(str(tmp_path / "d" / "training" / "patient002" / f"patient002_frame{ed:02d}.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(disk.dataobj), p2.frames[ed][0])  # independent of N


def test_config_splits_fit_default_patient_count():
    s = configs.get_split("synthetic", "trall", "c1")
    ids = set(s.labeled) | set(s.val) | set(s.test)
    assert ids == {f"{i:03d}" for i in range(1, configs.synthetic.NUM_PATIENTS + 1)}
