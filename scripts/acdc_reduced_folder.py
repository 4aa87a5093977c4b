"""Make the reduced real-ACDC benchmark folder (README "Real data (ACDC)", reduced protocol).

From a copy of the originals' preprocessed ACDC (``patientXXX/img_cropped.nii.gz`` +
``mask_cropped.nii.gz``, ED frames, 192x192 at 1.36719 mm) this writes an MSD-layout folder of
symbolic links (``dataset.json``, ``imagesTr/``, ``labelsTr/``) and ``split.json`` holding a
subset of the originals' ACDC split (ORIGINAL_SPEC §5.3): the labeled volume of ``tr1``/``c1``
(002), its two validation volumes (011, 071) plus ``--n_extra_val`` volumes of the originals'
pre-training validation list (``TR52_VAL``: in no test, labeled or unlabeled list; two validation
volumes are too few to choose by), the first ``--n_test`` official test patients
present and the first ``--n_unlabeled`` volumes of the originals' unlabeled pool (tr52 minus the
labeled one). ``python -m data.preprocess --dataset custom --split_file <out>/split.json
--target_resolution 2.5,2.5 --image_size 64,64`` then resamples it to the demo's 64x64 grid, so
that baseline and PLC run on real scans in minutes on two CPU cores.

Usage:
    python scripts/acdc_reduced_folder.py --cropped_dir acdc_bias_corr_cropped --out_dir acdc64_raw
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs import acdc  # noqa: E402

LABELS = {"0": "background", "1": "rv", "2": "myo", "3": "lv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cropped_dir", required=True, help="folder of patientXXX/{img,mask}_cropped.nii.gz")
    parser.add_argument("--out_dir", required=True, help="MSD-layout folder to create (must not exist)")
    parser.add_argument("--n_test", type=int, default=10, help="official test patients to keep")
    parser.add_argument("--n_unlabeled", type=int, default=27, help="volumes of the unlabeled pool to keep")
    parser.add_argument("--n_extra_val", type=int, default=0,
                        help="validation volumes added from the originals' pre-training validation list (013, 014, "
                             "033, ...: in no test, labeled or unlabeled list), so that validation can choose")
    args = parser.parse_args()
    src, out = Path(args.cropped_dir).resolve(), Path(args.out_dir)
    if out.exists():
        parser.error(f"--out_dir={out}: exists; give a new folder")

    def present(vid: str) -> bool:
        return (src / f"patient{vid}" / "img_cropped.nii.gz").is_file() and \
            (src / f"patient{vid}" / "mask_cropped.nii.gz").is_file()

    labeled = list(acdc.SPLITS.train[("tr1", "c1")])
    val = list(acdc.SPLITS.val[("tr1", "c1")])
    if not 0 <= args.n_extra_val <= len(acdc.TR52_VAL):
        parser.error(f"--n_extra_val={args.n_extra_val}: must lie in 0..{len(acdc.TR52_VAL)}")
    extra = [v for v in acdc.TR52_VAL if v not in val and present(v)][: args.n_extra_val]
    if len(extra) < args.n_extra_val:
        parser.error(f"--n_extra_val={args.n_extra_val}: only {len(extra)} of {', '.join(acdc.TR52_VAL)} are in "
                     f"--cropped_dir")
    val += extra
    test = [v for v in acdc.TEST if present(v)][: args.n_test]
    pool = [v for v in acdc.TR52 if v not in labeled and present(v)][: args.n_unlabeled]
    missing = [v for v in labeled + val if not present(v)]
    if missing:
        parser.error(f"--cropped_dir={src}: patients {missing} are missing")
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True)
    cases = labeled + val + test + pool
    for vid in cases:
        os.symlink(src / f"patient{vid}" / "img_cropped.nii.gz", out / "imagesTr" / f"{vid}.nii.gz")
        os.symlink(src / f"patient{vid}" / "mask_cropped.nii.gz", out / "labelsTr" / f"{vid}.nii.gz")
    info = {"name": "ACDC-reduced", "labels": LABELS, "modality": {"0": "MRI"}, "numTraining": len(cases),
            "training": [{"image": f"./imagesTr/{v}.nii.gz", "label": f"./labelsTr/{v}.nii.gz"} for v in cases]}
    (out / "dataset.json").write_text(json.dumps(info, indent=1))
    split = {"tr1": {"c1": labeled}, "val": val, "test": test, "unlabeled": pool}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    print(f"{out}: {len(cases)} volumes (labeled {labeled}, val {val}, test {test}, unlabeled {len(pool)})")


if __name__ == "__main__":
    main()
