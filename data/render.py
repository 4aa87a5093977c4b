"""Render a few slices of a preprocessed data dir to PNG with the labels overlaid.

Usage:
    python -m data.render --data_dir P --out_dir D [--ids 001,002] [--num_volumes 4] [--num_slices 4]

Writes ``D/<id>.png`` per volume: evenly spaced slices, the image in grey (top row) and with the
labels as a coloured transparent overlay with contours (bottom row), titled with the id.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from data import store
from common.errors import InputError

COLORS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#a65628", "#f781bf", "#999999")


def render_volume(volume: store.Volume, path: str | os.PathLike, struct_names: Sequence[str] = (),
                  num_slices: int = 4) -> None:
    """Save a PNG: ``num_slices`` evenly spaced slices of ``volume`` (top row) and with labels (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    depth = volume.image.shape[0]
    idx = np.unique(np.linspace(0, depth - 1, num=min(num_slices, depth)).round().astype(int))
    fig, axes = plt.subplots(2, len(idx), figsize=(2.4 * len(idx), 5.2), squeeze=False)
    n_fg = max(len(struct_names), int(volume.label.max()) if volume.label is not None else 0)
    cmap = ListedColormap(COLORS[: max(n_fg, 1)])
    for ax_img, ax, k in zip(axes[0], axes[1], idx):
        for a in (ax_img, ax):
            a.imshow(volume.image[k].T, cmap="gray", origin="lower", vmin=-0.1, vmax=1.1, interpolation="nearest")
            a.axis("off")
        ax_img.set_title(f"slice {k}", fontsize=8)
        if volume.label is not None and volume.label[k].any():
            lab = np.ma.masked_equal(volume.label[k].T, 0)
            ax.imshow(lab - 1, cmap=cmap, vmin=0, vmax=max(n_fg, 1) - 1 + 1e-9, alpha=0.35, origin="lower",
                      interpolation="nearest")
            for c in range(1, n_fg + 1):
                if (volume.label[k] == c).any():
                    ax.contour((volume.label[k] == c).T.astype(float), levels=[0.5], colors=[COLORS[c - 1]],
                               linewidths=0.8, origin="lower")
    if struct_names:
        fig.legend(handles=[Patch(color=COLORS[i], label=n) for i, n in enumerate(struct_names)],
                   loc="lower center", ncol=len(struct_names), fontsize=7, frameon=False)
    fig.suptitle(f"volume {volume.id}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def render(data_dir: str | os.PathLike, out_dir: str | os.PathLike, ids: Sequence[str] | None = None,
           num_volumes: int = 4, num_slices: int = 4) -> list[Path]:
    """Render ``ids`` (default: the first ``num_volumes`` volumes) of ``data_dir`` into ``out_dir``."""
    if int(num_slices) < 1 or int(num_volumes) < 1:
        raise InputError(f"--num_slices={num_slices}, --num_volumes={num_volumes}: both must be >= 1")
    info = store.read_dataset_json(data_dir)
    ids = list(ids) if ids else store.list_ids(data_dir)[: int(num_volumes)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for vid, vol in zip(ids, store.load_volumes(data_dir, ids)):
        final = out / f"{vid}.png"
        tmp = out / f".{vid}.tmp.png"  # same directory: os.replace is atomic
        try:
            render_volume(vol, tmp, info.get("struct_names", ()), int(num_slices))
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(final)
    return written


def main(argv: list[str]) -> None:
    """absl entry point of ``python -m data.render``."""
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("data_dir", "out_dir"):
        if not getattr(FLAGS, name):
            raise InputError(f"--{name} is required")
    ids = [i.strip() for i in FLAGS.ids.split(",") if i.strip()] if FLAGS.ids else None
    paths = render(FLAGS.data_dir, FLAGS.out_dir, ids, FLAGS.num_volumes, FLAGS.num_slices)
    print(f"wrote {len(paths)} PNG file(s) to {FLAGS.out_dir}", file=sys.stdout)


if __name__ == "__main__":
    from absl import app, flags

    from common.cli import run_main

    flags.DEFINE_string("data_dir", None, "preprocessed data directory (python -m data.preprocess)")
    flags.DEFINE_string("out_dir", None, "where to write <id>.png")
    flags.DEFINE_string("ids", None, "comma-separated volume ids (default: the first --num_volumes)")
    flags.DEFINE_integer("num_volumes", 4, "number of volumes when --ids is not given")
    flags.DEFINE_integer("num_slices", 4, "slices per volume")
    app.run(run_main(main))
