"""Run the command-line scripts in this process exactly as ``python <script> ARGS`` runs them.

``run_script`` executes a script's file as ``__main__`` under ``sys.argv = [script, *ARGS]``:
its own flag definitions, ``flags.mark_flags_as_required``, ``absl.app.run`` flag parsing, the
``run_main`` wrapper (``InputError`` -> exit 2) and its ``main``. The flags it defines are removed
from ``absl.flags.FLAGS`` afterwards, so the scripts (which share flag names) can run one after
the other in one test process.

With ``capture=True`` the stage functions the stage scripts hand their configuration to, and the
device set-up (``--num_replicas``), are replaced by recorders: ``stage_config`` then returns the
configuration a stage script builds from its own flags, which is what the stage tests use
instead of hand-copied defaults (a flag whose value does not reach the configuration fails).

This module is the one place that names the internals the orchestration tests depend on
(``STAGE_FUNCTIONS``, ``DEVICE_SETUP``); a restructuring that moves them fixes them here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import runpy
import sys
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from absl import app, flags, logging

ROOT = Path(__file__).resolve().parent.parent

# stage -> (script, module, function that receives the stage configuration)
STAGE_FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "global": ("train_pretrain.py", "training.stages.pretrain", "run_pretrain"),
    "local": ("train_pretrain.py", "training.stages.pretrain", "run_pretrain"),
    "baseline": ("train_selftrain.py", "training.stages.supervised", "run_supervised"),
    "pseudolabel": ("train_selftrain.py", "training.stages.pseudolabel", "run_pseudolabel"),
    "joint": ("train_selftrain.py", "training.stages.joint", "run_joint"),
}
# The function the stage scripts call with --num_replicas before TensorFlow starts its devices.
DEVICE_SETUP = ("training.engine.strategy", "configure_devices")


@dataclasses.dataclass
class ScriptRun:
    """What an in-process script run did."""

    code: int  # exit status (0 = success)
    stage_calls: list[tuple[str, Any]]  # (stage function name, configuration) when captured
    replicas: list[int]  # values handed to the device set-up when captured


def _is_project_module(module: str | None) -> bool:
    """A module of this repository (a script run as ``__main__`` is named by its path)."""
    if not module:
        return False
    if module.endswith(".py"):
        return Path(module).resolve().parent == ROOT
    top = module.split(".")[0]
    return (ROOT / top).is_dir() or (ROOT / f"{top}.py").is_file()


def _new_project_flags(before: set[str]) -> list[str]:
    """Flags defined since ``before`` by this repository's modules (not by libraries it imported)."""
    fv = flags.FLAGS
    return [n for n in set(fv) - before if _is_project_module(fv.find_module_defining_flag(n))]


@contextlib.contextmanager
def _own_flags() -> Iterator[set[str]]:
    """Remove the flags the project defines inside the block from the global FLAGS when it ends
    (flags of libraries imported on the way, e.g. TensorFlow's, stay defined)."""
    fv = flags.FLAGS
    app.define_help_flags()  # absl.app defines these once per process; keep them
    before = set(fv)
    try:
        yield before
    finally:
        for name in _new_project_flags(before):
            delattr(fv, name)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_script(script: str, argv: list[str] | tuple[str, ...] = (), capture: bool = False,
               quiet: bool = False) -> ScriptRun:
    """Run ``python <script> *argv`` in this process; returns its exit status (and captures).

    Args:
        script: file name under the repository root, e.g. ``"train_selftrain.py"``.
        argv: command-line arguments.
        capture: replace the stage functions and the device set-up by recorders (nothing trains).
        quiet: swallow what the script prints on stdout.
    """
    run = ScriptRun(code=0, stage_calls=[], replicas=[])
    verbosity = logging.get_verbosity()  # absl.app and the stage scripts change it
    with contextlib.ExitStack() as stack:
        stack.callback(logging.set_verbosity, verbosity)
        stack.enter_context(_own_flags())
        if capture:
            for _, module, name in STAGE_FUNCTIONS.values():
                def record(conf: Any, _name: str = name) -> dict[str, Any]:
                    run.stage_calls.append((_name, conf))
                    return {"step": 0}
                stack.enter_context(mock.patch.object(importlib.import_module(module), name, record))
            stack.enter_context(mock.patch.object(importlib.import_module(DEVICE_SETUP[0]), DEVICE_SETUP[1],
                                                  lambda n=1: run.replicas.append(int(n))))
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(mock.patch.object(sys, "argv", [str(ROOT / script), *argv]))
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exc:
            run.code = _exit_code(exc)
    return run


def stage_config(stage: str, argv: list[str] | tuple[str, ...] = ()) -> Any:
    """The configuration the stage script of ``stage`` hands to its stage function for ``argv``
    (``--stage`` is added); checks that exactly the right stage function was called."""
    script, _, name = STAGE_FUNCTIONS[stage]
    run = run_script(script, [f"--stage={stage}", *argv], capture=True, quiet=True)
    assert run.code == 0, f"{script} --stage={stage} {' '.join(argv)} exited with {run.code}"
    assert [n for n, _ in run.stage_calls] == [name], run.stage_calls
    return run.stage_calls[0][1]


def script_flags(script: str) -> dict[str, flags.Flag]:
    """The flags ``script`` defines (name -> absl Flag with its default, parser, choices)."""
    fv = flags.FLAGS
    with _own_flags() as before:
        # As __main__ (some scripts define their flags there), with app.run doing nothing.
        with mock.patch.object(sys, "argv", [str(ROOT / script)]), mock.patch.object(app, "run", lambda *a, **k: None):
            runpy.run_path(str(ROOT / script), run_name="__main__")
        return {name: fv[name] for name in _new_project_flags(before)}


def argv_for(values: dict[str, Any]) -> list[str]:
    """``--name=value`` arguments (booleans as true/false, lists comma-joined, None left out)."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out.append(f"--{name}={value}")
    return out


def other_value(flag: flags.Flag) -> Any:
    """A valid value of ``flag`` that differs from its default (to see it arrive somewhere)."""
    default = flag.default
    enum_values = getattr(flag.parser, "enum_values", None)
    if isinstance(flag, flags.MultiFlag):
        return ["--x1", "--x2"]
    if enum_values:
        return next(v for v in enum_values if v != default)
    if isinstance(flag.parser, flags.BooleanParser):
        return not bool(default)
    if isinstance(flag.parser, flags.IntegerParser):
        return 7 if default is None else int(default) + 3
    if isinstance(flag.parser, flags.FloatParser):
        return 0.375 if default is None else float(default) * 2 + 0.375
    if isinstance(flag.parser, flags.ListParser):
        return ["x1", "x2"]
    return f"value_of_{flag.name}"


def flag_value(conf: Any, name: str) -> Any:
    """The value of flag ``name`` in a stage configuration (a mapping, an object with that
    attribute, or nested dataclasses holding a field of that name)."""
    if isinstance(conf, dict) and name in conf:
        return conf[name]
    if hasattr(conf, name):
        return getattr(conf, name)
    if dataclasses.is_dataclass(conf):
        for field in dataclasses.fields(conf):
            sub = getattr(conf, field.name)
            if dataclasses.is_dataclass(sub) or isinstance(sub, dict):
                try:
                    return flag_value(sub, name)
                except KeyError:
                    pass
    raise KeyError(f"flag {name!r} is not in the configuration")
