"""Expensive fixture results computed once per test run, also under pytest-xdist.

A module- or session-scoped fixture runs once per xdist worker that needs it; when the tests
using it land on both workers, a training run is done twice. :func:`computed_once` gives the
workers of one run a shared directory and an exclusive lock: the first worker computes into it,
the others wait for it and reuse the result. Without xdist it is a plain directory.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable

DONE = "result.json"


def computed_once(tmp_path_factory, name: str, compute: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict]:
    """``(directory, result)``: ``compute(directory)`` run by one process of this test run.

    Args:
        tmp_path_factory: pytest's fixture.
        name: what is computed (a directory name).
        compute: writes what it makes under the directory and returns a JSON-able result.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:  # no xdist: this process is the only one
        root = tmp_path_factory.mktemp(name)
        return root, json.loads(json.dumps(compute(root)))
    root = tmp_path_factory.getbasetemp().parent / f"shared_{run_id}" / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the first worker computes; released on close
        if not (root / DONE).is_file():
            (root / DONE).write_text(json.dumps(compute(root)))
    return root, json.loads((root / DONE).read_text())
