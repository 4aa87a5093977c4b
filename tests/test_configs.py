"""configs: dataset constants (ORIGINAL_SPEC §2.1, §3.1, §4.3) and split lists (§5.3)."""
import re

import pytest

import configs
from common.errors import InputError


def test_dataset_constants():
    acdc = configs.get_config("acdc")
    assert (acdc.image_size, acdc.target_resolution, acdc.num_classes) == ((192, 192), (1.36719, 1.36719), 4)
    assert acdc.struct_names == ("rv", "myo", "lv") and acdc.class_weights == (0.1, 0.3, 0.3, 0.3)
    assert acdc.min_seg_classes == 3 and acdc.crf_params == (0.01, 0.5, 10, 10, 30, 30)
    assert acdc.unlabeled_pool == ("tr52", "c1")
    pro = configs.get_config("prostate_md")
    assert (pro.image_size, pro.target_resolution, pro.num_classes) == ((192, 192), (0.625, 0.625), 3)
    assert pro.struct_names == ("pz", "cz") and pro.class_weights == (0.1, 0.45, 0.45)
    assert pro.min_seg_classes == 2 and pro.crf_params == (0.01, 0.5, 10, 5, 30, 30)
    assert pro.unlabeled_pool == ("tr22", "c1")
    mm = configs.get_config("mmwhs")
    assert (mm.image_size, mm.target_resolution, mm.num_classes) == ((160, 160), (1.5, 1.5), 8)
    assert mm.struct_names == ("myo", "la", "lv", "ra", "rv", "aa", "pa")
    assert mm.class_weights == (0.09,) + (0.13,) * 7 and mm.min_seg_classes == 3
    assert mm.unlabeled_pool == ("tr10", "c1")
    syn = configs.get_config("synthetic")
    assert syn.image_size == (64, 64) and syn.num_classes == 4 and syn.raw_layout == "acdc"
    assert configs.DATASETS == ("acdc", "prostate_md", "mmwhs", "synthetic", "custom")  # custom: tests/test_custom_dataset.py


def test_acdc_lists_match_spec():
    s = configs.get_split("acdc", "tr52", "c1")
    assert len(s.labeled) == 52 == len(set(s.labeled))
    assert {"001", "006", "012", "017", "026", "037", "046", "066", "072", "077", "086", "097", "100"} <= set(s.labeled)
    assert not {"007", "011", "013", "027", "031", "071"} & set(s.labeled)
    assert s.val == ("013", "014", "033", "034", "053", "054", "073", "074", "093", "094")
    assert s.test == ("007", "008", "009", "010", "027", "028", "029", "030", "047", "048", "049", "050",
                      "067", "068", "069", "070", "087", "088", "089", "090")
    trall = configs.get_split("acdc", "trall", "c4")
    assert len(trall.labeled) == 78 and "011" in trall.labeled and not {"031", "071"} & set(trall.labeled)
    assert trall.val == ("011", "071")
    assert configs.get_split("acdc", "tr1", "c2").labeled == ("042",)
    assert configs.get_split("acdc", "tr1", "c2").val == ("031", "072")
    assert configs.get_split("acdc", "tr1", "c5").val == ("011", "071")
    assert configs.get_split("acdc", "tr2", "c3").labeled == ("042", "095")
    assert configs.get_split("acdc", "tr2", "c3").val == ("031", "072")
    assert configs.get_split("acdc", "tr2", "c4").val == ("011", "071")
    assert configs.get_split("acdc", "tr8", "c2").labeled == ("002", "022", "042", "062", "095", "063", "094", "043")
    assert configs.get_split("acdc", "tr8", "c3").labeled[-3:] == ("003", "094", "023")
    # unlabeled pool is tr52 for every ordinary split
    assert configs.get_split("acdc", "tr1", "c3").unlabeled == s.labeled


def test_acdc_ssl4mis():
    s3 = configs.get_split("acdc", "ssl4mis3", "c1")
    assert s3.labeled == ("099", "099_ES", "038", "038_ES", "050", "050_ES")
    assert len(s3.val) == 20 and len(s3.test) == 40 and "001_ES" in s3.test and "087_ES" in s3.val
    s7 = configs.get_split("acdc", "ssl4mis7", "c1")
    assert {p for p in s7.labeled if not p.endswith("_ES")} == {"099", "038", "050", "100", "058", "021", "049"}
    for s, n_lab in ((s3, 3), (s7, 7)):
        sets = [set(s.labeled), set(s.unlabeled), set(s.val), set(s.test)]
        assert sum(len(x) for x in sets) == 200  # 100 patients x (ED, ES), disjoint
        assert len(set().union(*sets)) == 200
        assert len(s.unlabeled) == 2 * (70 - n_lab)


def test_prostate_lists_match_spec():
    trall = configs.get_split("prostate_md", "trall", "c1")
    assert trall.labeled[:2] == ("000", "001") and "000001" not in trall.labeled  # §9.1.2 fixed
    assert len(trall.labeled) == 15 and trall.val == ("013", "014")
    tr22 = configs.get_split("prostate_md", "tr22", "c2")
    assert len(tr22.labeled) == 17 and tr22.val == ("013", "014", "020", "028")
    assert configs.get_split("prostate_md", "tr2", "c2").labeled == ("021", "024")
    assert configs.get_split("prostate_md", "tr2", "c4").val == ("013", "014")
    assert configs.get_split("prostate_md", "tr1", "c5").val == ("025", "028")
    assert configs.get_split("prostate_md", "tr10", "c3").labeled == (
        "000", "001", "002", "004", "006", "007", "010", "016", "024", "018")
    assert configs.get_split("prostate_md", "tr8", "c3").val == ("025", "028")
    s = configs.get_split("prostate_md", "tr1", "c1")
    assert s.unlabeled == tr22.labeled and len(s.test) == 15 and s.test[0] == "029" and s.test[-1] == "047"
    with pytest.raises(InputError):
        configs.get_split("prostate_md", "tr8", "c4")


def test_mmwhs_lists_match_spec():
    assert configs.get_split("mmwhs", "tr1", "c3").labeled == ("1008",)
    assert configs.get_split("mmwhs", "tr1", "c3").val == ("1007", "1002")
    assert configs.get_split("mmwhs", "tr2", "c4").val == ("1004", "1008")
    s = configs.get_split("mmwhs", "tr8", "c2")
    assert len(s.labeled) == 8 and not {"1001", "1008"} & set(s.labeled) and s.val == ("1001", "1008")
    tr10 = configs.get_split("mmwhs", "tr10", "c1")
    assert tr10.labeled == tuple(str(i) for i in range(1001, 1011)) and tr10.val == ("1002", "1005", "1008", "1010")
    assert s.test == tuple(str(i) for i in range(1011, 1021)) and s.unlabeled == tr10.labeled
    with pytest.raises(InputError, match=r"tr2 \{c1,c2,c3,c4\}"):
        configs.get_split("mmwhs", "tr2", "c5")


def test_synthetic_splits_are_consistent():
    s = configs.get_split("synthetic", "trall", "c1")
    assert len(s.labeled) == 26 and len(s.val) == 4 and len(s.test) == 10
    assert not (set(s.labeled) | set(s.val)) & set(s.test) and not set(s.labeled) & set(s.val)
    for key in configs.synthetic.SPLITS.train:
        sp = configs.get_split("synthetic", *key)
        assert set(sp.labeled) <= set(s.labeled) and sp.unlabeled == s.labeled


@pytest.mark.parametrize("dataset", configs.BUILTIN)
def test_every_split_is_well_formed(dataset):
    table = getattr(configs, dataset).SPLITS
    width = 4 if dataset == "mmwhs" else 3
    for key in table.train:
        s = configs.get_split(dataset, *key)
        for group in (s.labeled, s.unlabeled, s.val, s.test):
            assert group and len(group) == len(set(group))
            assert all(re.fullmatch(rf"\d{{{width}}}(_ES)?", v) for v in group), group
        assert not set(s.labeled) & set(s.test) and not set(s.val) & set(s.test)


def test_errors():
    with pytest.raises(InputError, match="valid: .*tr1 {c1,c2,c3,c4,c5}.*trall"):
        configs.get_split("acdc", "tr3", "c1")
    with pytest.raises(InputError, match="ssl4mis3 {c1}"):
        configs.get_split("acdc", "ssl4mis3", "c2")
    with pytest.raises(InputError, match="unknown dataset"):
        configs.get_config("brats")
