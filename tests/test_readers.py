"""data.readers / data.nifti_io on tiny files in each dataset's exact layout."""
import nibabel as nib
import numpy as np
import pytest

from _data_helpers import (SPACING, blob_volume, mmwhs_label, oblique_affine, write_acdc, write_mmwhs_orig,
                           write_mmwhs_raw, write_prostate_msd, write_prostate_orig)
from data import readers
from common.errors import InputError


def test_info_cfg(tmp_path):
    p = tmp_path / "Info.cfg"
    p.write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    info = readers.parse_info_cfg(p)
    assert info == {"ED": "1", "ES": "12", "Group": "DCM", "Height": "184.0", "NbFrame": "30", "Weight": "95.0"}


def test_acdc_ed_and_es(tmp_path):
    write_acdc(tmp_path, patients=(1, 90), frames={1: (1, 3), 90: (4, 11)})
    sources = readers.find_volumes("acdc", tmp_path, phases=("ED", "ES"))
    assert [s.id for s in sources] == ["001", "001_ES", "090", "090_ES"]
    by_id = {s.id: s for s in sources}
    assert by_id["090"].image_path.name == "patient090_frame04.nii.gz"  # ED from Info.cfg, not frame 01
    assert by_id["090_ES"].label_path.name == "patient090_frame11_gt.nii.gz"
    assert by_id["001_ES"].info["phase"] == "ES" and by_id["001_ES"].info["Group"] == "NOR"
    vol = readers.read_volume(by_id["090"], num_classes=4)
    disk = nib.load(str(by_id["090"].image_path))
    assert vol.image.dtype == np.float32 and vol.image.shape == (24, 20, 3)
    np.testing.assert_array_equal(vol.image, np.asanyarray(disk.dataobj).astype(np.float32))
    assert vol.label.dtype == np.int16 and set(np.unique(vol.label)) == {0, 1, 2, 3}
    np.testing.assert_allclose(vol.spacing, SPACING)
    np.testing.assert_allclose(vol.affine, oblique_affine())
    np.testing.assert_allclose(vol.label_affine, oblique_affine())
    assert vol.header.get_data_shape() == (24, 20, 3)
    es = readers.read_volume(by_id["090_ES"], num_classes=4)
    assert 3 not in np.unique(es.label)  # the ES file was written differently
    # default: ED only; the folder may also be given directly (no training/)
    assert [s.id for s in readers.find_volumes("acdc", tmp_path / "training")] == ["001", "090"]
    assert readers.acdc_source(tmp_path / "training" / "patient001", "ES").id == "001_ES"


def test_prostate_msd_layout(tmp_path):
    write_prostate_msd(tmp_path, cases=(0, 7))
    sources = readers.find_volumes("prostate_md", tmp_path)
    assert [s.id for s in sources] == ["000", "007"]  # ._ files ignored, ids zero-padded to 3 digits
    vol = readers.read_volume(sources[1], num_classes=3)
    img, lab = blob_volume((24, 20, 3), 3, seed=7)
    np.testing.assert_allclose(vol.image, img)  # channel 0 (T2), not ADC
    np.testing.assert_array_equal(vol.label, lab)
    np.testing.assert_allclose(vol.spacing, SPACING)
    np.testing.assert_allclose(vol.affine, oblique_affine())


def test_prostate_original_layout(tmp_path):
    write_prostate_orig(tmp_path, ids=("000", "002"))
    sources = readers.find_volumes("prostate_md", tmp_path)
    assert [s.id for s in sources] == ["000", "002"]
    assert sources[0].image_path.name == "img.nii.gz" and sources[0].label_path.name == "mask.nii.gz"
    vol = readers.read_volume(sources[1], num_classes=3)
    assert vol.image.shape == vol.label.shape == (24, 20, 3)


def test_mmwhs_raw_layout_remaps_labels(tmp_path):
    write_mmwhs_raw(tmp_path, ids=(1001, 1010))
    sources = readers.find_volumes("mmwhs", tmp_path)
    assert [s.id for s in sources] == ["1001", "1010"]
    vol = readers.read_volume(sources[0], num_classes=8)
    raw, expected = mmwhs_label()
    np.testing.assert_array_equal(vol.label, expected)
    assert vol.label[raw == 205].min() == 1 and vol.label[raw == 850].max() == 7
    np.testing.assert_allclose(vol.spacing, SPACING)
    assert readers.find_volumes("mmwhs", tmp_path / "mr_train")[0].id == "1001"


def test_mmwhs_original_layout(tmp_path):
    write_mmwhs_orig(tmp_path, ids=("1003",))
    (src,) = readers.find_volumes("mmwhs", tmp_path)
    vol = readers.read_volume(src, num_classes=8)
    np.testing.assert_array_equal(vol.label, mmwhs_label()[1])


def test_find_rejects_empty_dirs(tmp_path):
    for layout in readers.LAYOUTS:
        with pytest.raises(InputError, match="raw_dir"):
            readers.find_volumes(layout, tmp_path)
    with pytest.raises(InputError, match="--phases"):
        readers.find_volumes("acdc", tmp_path, phases=("XX",))
