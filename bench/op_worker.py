"""The request loop shared by the timing workers of ``bench.ops`` (ours in TensorFlow, the peer in PyTorch).

Standard library only: the peer's worker (``bench.peer_ops``) runs with the peer's Python, which has
torch but none of this project's dependencies.

Protocol, one JSON object per line. The worker writes ``{"hello": {...}}`` first, then answers each
request on its standard input:

* ``{"key": k, "spec": {...}, "reps": n}`` -> ``{"key": k, "times": [n seconds]}``: the op ``spec``
  describes is built on first use (and run once untimed: tracing, compilation, oneDNN
  primitive creation), then run ``n`` times;
* ``{"clear": true}`` -> ``{"cleared": n}``: the built ops are dropped (their tensors may be large;
  the parent clears after each group of ops);
* ``{"key": k, "spec": {...}, "probe": true}`` -> ``{"key": k, "verbose": [lines]}``: the op is run
  once to warm up, then once more with file descriptor 1 captured: the ``onednn_verbose`` lines that
  oneDNN printed (with ``ONEDNN_VERBOSE=1`` in the worker's environment), for which kernels and
  memory formats it picked; ``"info"`` holds the first run's ``info`` lines (version, ISA);
* ``{"exit": true}`` or end of input -> the worker exits.

An op the worker cannot run gets ``{"key": k, "unsupported": reason}``, a failing one
``{"key": k, "error": message}``. The replies go to a duplicate of the original standard output;
file descriptor 1 itself is pointed at standard error, so that whatever libraries print never
mixes with them.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

VERBOSE_PREFIXES = ("onednn_verbose", "dnnl_verbose")


class Unsupported(Exception):
    """Raised by a worker's op builder for an op (or layout) that this worker cannot run."""


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def captured_fd1(fn: Callable[[], Any]) -> list[str]:
    """Run ``fn()`` with file descriptor 1 redirected to a file; its lines that oneDNN's verbose mode writes."""
    _flush_c_stdout()
    sys.stdout.flush()
    with tempfile.TemporaryFile() as f:
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            fn()
        finally:
            _flush_c_stdout()
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith(VERBOSE_PREFIXES)]


def serve(build: Callable[[dict[str, Any]], Callable[[], Any]], hello: dict[str, Any],
          stdin=None) -> None:
    """Answer requests until end of input (see module docstring).

    Args:
        build: ``spec -> fn``; ``fn()`` runs the op once, to completion. Raises :class:`Unsupported`
            for an op this worker cannot run.
        hello: what the worker reports first (versions, thread settings).
        stdin: request stream (default: ``sys.stdin``).
    """
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"hello": hello})
    ops: dict[str, Callable[[], Any]] = {}
    for line in stdin or sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        if req.get("exit"):
            break
        if req.get("clear"):
            reply({"cleared": len(ops)})
            ops.clear()
            continue
        key = req.get("key")
        try:
            if key not in ops:
                fn = build(req["spec"])
                if req.get("probe"):
                    info = captured_fd1(fn)
                    fn()
                    reply({"key": key, "verbose": captured_fd1(fn), "info": info})
                    continue
                fn()
                ops[key] = fn
            fn = ops[key]
            if req.get("probe"):
                reply({"key": key, "verbose": captured_fd1(fn), "info": []})
                continue
            times = []
            for _ in range(int(req.get("reps", 1))):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            reply({"key": key, "times": times})
        except Unsupported as e:
            reply({"key": key, "unsupported": str(e)})
        except Exception as e:  # noqa: BLE001 - reported to the parent, which goes on with the other ops
            tail = traceback.format_exception_only(type(e), e)[-1].strip()
            reply({"key": key, "error": tail[:500]})
    out.close()
