"""Validation Dice at native resolution during training (the model-selection score)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from training.engine.env import load_labeled
from training.engine.summaries import overlay_images


class Validator:
    """Validation Dice at native resolution (ORIGINAL_SPEC §6.1), the model-selection score.

    The score is ``evaluation.inference.evaluate_volumes`` (the same code as ``evaluate.py``);
    this class adds the per-structure means and a few overlays for TensorBoard. Returns
    ``{"val_dice": mean over volumes of the mean foreground Dice, "val_dice_<struct>": ...,
    "images": (3, H, 3W, 3) uint8 overlays of the first validation volume}``.
    """

    def __init__(self, data_dir: str, ids: Sequence[str], cfg: Any, model: Any) -> None:
        from evaluation.inference import keras_predictor

        self.cfg = cfg
        self.data_dir = data_dir
        self.ids = tuple(ids)
        vols = load_labeled(data_dir, ids, "validation")  # fail early on unlabeled volumes
        self.first = vols[0]
        fg = (self.first.label > 0).sum(axis=(1, 2))  # (D,)
        self.pick = np.sort(np.argsort(-fg)[:3])  # the 3 slices with the most foreground
        self.predictor = keras_predictor(model)

    def __call__(self, step: int) -> dict[str, Any]:
        from evaluation.inference import evaluate_volumes

        res = evaluate_volumes(self.predictor, self.data_dir, self.ids, self.cfg)
        out: dict[str, Any] = {"val_dice": res.mean_dice}
        with np.errstate(all="ignore"):
            per_struct = np.nanmean(res.dice[:, 1:], axis=0)  # (C-1,)
        for name, value in zip(self.cfg.struct_names, per_struct):
            out[f"val_dice_{name}"] = float(value)
        vol = self.first
        probs = self.predictor(vol.image[self.pick][..., None])  # (3, H, W, C), inference BN
        out["images"] = overlay_images(vol.image[self.pick], vol.label[self.pick], np.argmax(probs, -1))
        return out
