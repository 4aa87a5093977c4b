"""The import graph of the project: no cycle between modules, no arrow from a lower layer to a higher one.

Every ``import`` of every project module is read with ``ast`` (module-level and inside functions
alike), so an import moved into a function to hide a cycle still counts.

The layers, lowest first (a module may import its own layer and the layers below it):

    common               errors, atomic writes, JSON files, the CLI main wrapper
    configs              dataset configs (DatasetConfig, splits)
    data                 reading, preprocessing, augmentation, tf.data samplers
    models               UNet, heads, precision policies
    losses               segmentation and contrastive losses
    workdir              the workdir's files and the one model loader
    evaluation           inference, metrics, reports, export
    pseudolabels         TTA, CRF, pseudo-label generation
    training.config      stage configs
    training.engine      loop, steps, strategy, checkpoints
    training.stages      one task per stage
    training             flags, stage registry, pipeline, reproduction
    entry points         bench/, scripts/ and the top-level scripts (run_pipeline.py, train_*.py,
                         evaluate.py, predict.py)

Within a layer any arrow is allowed as long as there is no cycle.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (layer name, module prefixes); lowest first.
LAYERS = (
    ("common", ("common",)),
    ("configs", ("configs",)),
    ("data", ("data",)),
    ("models", ("models",)),
    ("losses", ("losses",)),
    ("workdir", ("workdir",)),
    ("evaluation", ("evaluation",)),
    ("pseudolabels", ("pseudolabels",)),
    ("training.config", ("training.config",)),
    ("training.engine", ("training.engine",)),
    ("training.stages", ("training.stages",)),
    ("training", ("training",)),
    ("entry points", ("bench", "scripts", "run_pipeline", "train_pretrain", "train_selftrain", "evaluate",
                      "predict")),
)
SKIP_DIRS = {"tests", "__pycache__", "demo_out"}


def _modules() -> dict[str, Path]:
    mods = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                mods[dotted.removesuffix(".__init__")] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: line}."""
    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        edges = graph.setdefault(mod, {})
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                resolved = _resolve(target, mods)
                if resolved is not None and resolved != mod:
                    edges.setdefault(resolved, node.lineno)
    return graph


def _layer(mod: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{mod}: in no layer; add it to LAYERS in {__file__}"
    return rank


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    for mod in _modules():
        _layer(mod)


def test_no_import_cycle():
    graph = _graph(_modules())
    cycles = _cycles(graph)
    described = ["; ".join(f"{m} -> {t} (line {graph[m][t]})" for m in comp for t in graph[m] if t in comp)
                 for comp in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_no_arrow_from_a_lower_layer_to_a_higher_one():
    mods = _modules()
    graph = _graph(mods)
    upward = [f"{mods[m].relative_to(ROOT)}:{line}: {m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
              for m, edges in sorted(graph.items()) for t, line in sorted(edges.items()) if _layer(t) > _layer(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_walk_sees_function_level_imports():
    graph = _graph(_modules())
    assert graph, "no modules found"
    # evaluate.py imports the workdir inside main() only (TensorFlow stays out of a flag error).
    assert "workdir" in graph["evaluate"]
