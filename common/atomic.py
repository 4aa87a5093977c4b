"""Atomic file writes: write to a temporary sibling, then ``os.replace`` onto the target."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

# Names of the temporaries this module creates: files ``.<name>.<random>.tmp[<suffix>]`` and
# directories ``.<name>.<random>.tmp`` / ``.<name>.<random>.old`` (atomic_dir).
TEMP_NAME = re.compile(r"^\..+\.(tmp(\..+)?|old)$")


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN written as ``NaN``, as Python's json does)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_nifti(img: Any, path: str | os.PathLike) -> None:
    """Atomically save a nibabel image; the temp file keeps the ``.nii``/``.nii.gz`` suffix."""
    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = _tmp_sibling(path, suffix=suffix)
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    An existing ``path`` is removed only after the new content is complete. On error the
    temporary directory is deleted and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_temp_leftovers(root: str | os.PathLike, extra: Iterable[re.Pattern] = (),
                          skip_dirs: Iterable[str] = ()) -> list[Path]:
    """Delete the temporaries a writer killed mid-write (e.g. by SIGKILL) left under ``root``.

    The writes themselves are atomic, so the targets are intact; only the temporary siblings stay
    behind. Call it when a process takes over ``root`` (a resumed training stage), never while
    another process may be writing there.

    Args:
        root: directory to clean (nothing happens if it does not exist).
        extra: further name patterns of temporaries (e.g. TensorFlow's checkpoint temporaries).
        skip_dirs: name prefixes of sub-directories left alone (e.g. outputs of other programs).

    Returns:
        The removed paths.
    """
    patterns = [TEMP_NAME, *extra]
    skip = tuple(skip_dirs)
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames):
            path = Path(dirpath) / name
            if any(p.search(name) for p in patterns):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                dirnames.remove(name)
            elif skip and name.startswith(skip):
                dirnames.remove(name)
        for name in filenames:
            if any(p.search(name) for p in patterns):
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
