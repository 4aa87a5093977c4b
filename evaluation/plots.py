"""Evaluation plots (matplotlib, Agg backend): Dice box plot, overlays, training curves."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from common.atomic import atomic_write_bytes  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def dice_boxplot(dice: np.ndarray, struct_names: Sequence[str], path: str | os.PathLike,
                 title: str = "") -> str:
    """Box plot of the per-volume Dice of each foreground structure.

    Args:
        dice: ``(V, C)`` per-volume, per-class Dice (class 0 = background is not plotted; NaN dropped).
        struct_names: the C-1 foreground names.
        path: output PNG.
        title: figure title.

    Returns:
        The written path.
    """
    dice = np.asarray(dice, dtype=np.float64)
    data = [col[np.isfinite(col)] for col in dice[:, 1:].T]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(struct_names), 3.6))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(struct_names) + 1), list(struct_names))
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Dice")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"Dice per structure ({dice.shape[0]} volumes)")
    return _save(fig, path)


def _label_cmap(num_classes: int) -> ListedColormap:
    base = plt.get_cmap("tab10")
    colors = [(0, 0, 0, 0)] + [(*base((c - 1) % 10)[:3], 0.45) for c in range(1, num_classes)]
    return ListedColormap(colors)


def pick_slices(label: np.ndarray, num: int = 4) -> list[int]:
    """Up to ``num`` slice indices evenly spread over the slices that contain foreground.

    Args:
        label: ``(D, H, W)`` labels (falls back to all slices when no foreground).
    """
    fg = np.nonzero(np.asarray(label).reshape(label.shape[0], -1).any(axis=1))[0]
    pool = fg if fg.size else np.arange(label.shape[0])
    if pool.size <= num:
        return [int(i) for i in pool]
    return [int(pool[int(round(i))]) for i in np.linspace(0, pool.size - 1, num)]


def overlay_figure(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, num_classes: int,
                   path: str | os.PathLike, slices: Sequence[int] | None = None, title: str = "") -> str:
    """Image / GT / prediction panels for a few slices of one volume.

    Args:
        image: ``(D, H, W)`` image.
        gt: ``(D, H, W)`` ground truth or None.
        pred: ``(D, H, W)`` predicted labels.
        num_classes: C (for a fixed colour per class).
        path: output PNG.
        slices: slice indices (default: 4 foreground slices of ``gt`` or ``pred``).
        title: figure title.

    Returns:
        The written path.
    """
    image = np.asarray(image)
    if slices is None:
        slices = pick_slices(gt if gt is not None else pred)
    cols = 3 if gt is not None else 2
    cmap = _label_cmap(num_classes)
    fig, axes = plt.subplots(len(slices), cols, figsize=(2.4 * cols, 2.4 * len(slices)), squeeze=False)
    for row, z in enumerate(slices):
        panels = [("image", None)] + ([("ground truth", gt[z])] if gt is not None else []) + [
            ("prediction", pred[z])]
        for col, (name, lab) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image[z], cmap="gray")
            if lab is not None:
                ax.imshow(lab, cmap=cmap, vmin=0, vmax=num_classes - 1, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{name}, slice {z}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def training_curves(metrics: dict[str, list[dict[str, Any]]], path: str | os.PathLike,
                    title: str = "") -> str | None:
    """One panel per scalar of ``metrics.json`` (train and val series against the step).

    Returns:
        The written path, or None when there is nothing to plot.
    """
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for split in ("train", "val"):
        for rec in metrics.get(split, []):
            step = rec.get("step")
            for key, value in rec.items():
                if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                xs, ys = series.setdefault(key, {}).setdefault(split, ([], []))
                xs.append(step)
                ys.append(float(value))
    if not series:
        return None
    names = sorted(series)
    ncols = min(3, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.8 * nrows), squeeze=False,
                             constrained_layout=True)
    for ax, name in zip(axes.ravel(), names):
        for split, (xs, ys) in series[name].items():
            ax.plot(xs, ys, "-" if split == "train" else "o-", label=split, markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
