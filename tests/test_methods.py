"""evaluation.methods: a run is named by its recorded settings (labels, pipeline ids, reference rows)."""
from __future__ import annotations

import pytest

from common.errors import InputError
from evaluation import methods

CONFIGS = {"base": {"stage": "baseline"}, "lcl": {"stage": "local"}, "gcl": {"stage": "global"},
           "ft": {"stage": "baseline", "init_from": "lcl"}, "ft_g": {"stage": "baseline", "init_from": "gcl"}}
RELEASE = {"stage": "joint", "plc_warm_start": False, "plc_round_floor": False, "crf": True,
           "plc_global_best": False, "replicate_plc_loss_weighting": True, "lamda_local": 0.1, "local_loss_exp_no": 1}
PLUS = {"plc_warm_start": True, "plc_round_floor": True, "crf": False, "replicate_plc_loss_weighting": False}


def _classify(config, tr=None):
    return methods.classify(config, tr, reader=lambda wd: CONFIGS.get(str(wd), {}) if wd else {})


@pytest.mark.parametrize("config, method, label, reference", [
    ({"stage": "baseline"}, "baseline", "Baseline (random init)", "baseline"),
    ({"stage": "baseline", "no_of_tr_imgs": "trall"}, "benchmark", "Benchmark (all labels, random init)", "benchmark"),
    ({"stage": "baseline", "init_from": "lcl"}, "gcl_lcl", "GCL+LCL pre-training + fine-tuning", "baseline_gcl_lcl"),
    ({"stage": "baseline", "init_from": "gcl"}, "gcl", "GCL pre-training + fine-tuning (no LCL)", None),
    ({**RELEASE, "init_from": "base"}, "plc", "PLC (release)", "plc_inter"),
    ({**RELEASE, "init_from": "base", "local_loss_exp_no": 0}, "plc_intra", "PLC intra (release)", "plc_intra"),
    ({**RELEASE, "init_from": "ft"}, "plc_gcl_lcl", "PLC inter from GCL+LCL (release)", "plc_inter_gcl_lcl"),
    ({**RELEASE, "init_from": "ft", "lamda_local": 0.0}, "selftrain_gcl_lcl",
     "Self-training from GCL+LCL (release, no contrastive term)", "self_training_gcl_lcl"),
    ({**RELEASE, "init_from": "base", "replicate_plc_loss_weighting": False}, "plc",
     "PLC (release; mean-over-pairs weighting)", "plc_inter"),
    ({**RELEASE, "init_from": "base", **PLUS}, "plc_plus", "PLC+ (port variant: warm start, round floor, no CRF)",
     None),
    ({**RELEASE, "init_from": "base", **PLUS, "replicate_plc_loss_weighting": True}, "plc_plus",
     "PLC+ (port variant: warm start, round floor, no CRF); the release's pair weighting", None),
    ({**RELEASE, "init_from": "base", "plc_warm_start": True}, None, "PLC (modified: warm start)", None),
    ({**RELEASE, "init_from": "base", "crf": False, "lamda_local": 0.3}, None,
     "PLC (modified: no CRF, lamda_local=0.3)", None),
    ({**RELEASE, "init_from": "ft", "local_loss_exp_no": 0}, None, "PLC intra from GCL+LCL (release)", None),
    ({**RELEASE, "init_from": "base", "lamda_local": 0.0}, None, "Self-training (release, no contrastive term)", None),
    ({**RELEASE, "init_from": "nowhere"}, None, "PLC inter (baseline init unknown) (release)", None),
    ({}, None, "unknown (no config.json recorded)", None),
    ({"stage": "pseudolabel"}, None, "pseudolabel stage", None),
])
def test_classify(config, method, label, reference):
    got = _classify(config)
    assert (got.method, got.label, got.reference) == (method, label, reference)
    assert bool(got.reason) == (reference is None)  # every unmatched run says why


def test_every_pipeline_method_has_a_label_and_a_reference_entry():
    from training.pipeline import METHODS

    for m in METHODS:
        assert m in methods.LABELS and m in methods.PIPELINE_TO_REFERENCE
    assert methods.PIPELINE_TO_REFERENCE["plc_plus"] is None


def test_classify_workdir_reads_config_json(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        methods.classify_workdir(tmp_path)
    (tmp_path / "config.json").write_text('{"stage": "baseline"}')
    assert methods.classify_workdir(tmp_path).label == "Baseline (random init)"
