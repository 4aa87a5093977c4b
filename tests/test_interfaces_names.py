"""The docs name only what exists: every dotted project name in docs/INTERFACES.md and README.md
imports or resolves, every path of README "Where things live" exists, every ``python -m`` module too."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "configs", "data", "models", "losses", "pseudolabels", "workdir", "training", "evaluation",
            "bench", "scripts")
DOTTED = re.compile(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(PACKAGES))
# File names that read like dotted names (not Python objects).
NOT_NAMES = re.compile(r"\.(py|sh|json|csv|md|txt|h5|gz|nii|pb)$")


def _dotted_names(path: Path) -> list[str]:
    return sorted({n for n in DOTTED.findall(path.read_text()) if not NOT_NAMES.search(n)})


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not ".".join(parts[:i]).startswith(exc.name):
                raise  # a module that exists but fails to import: a real error
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", ["docs/INTERFACES.md", "README.md"])
def test_every_dotted_name_resolves(doc):
    names = _dotted_names(ROOT / doc)
    assert names, f"{doc}: no dotted names found"
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"{doc} names what does not exist: {', '.join(missing)}"


@pytest.mark.parametrize("doc", ["docs/INTERFACES.md", "README.md"])
def test_every_python_m_module_exists(doc):
    text = (ROOT / doc).read_text()
    modules = set()
    for group in re.findall(r"python -m ((?:[\w.]+\|?)+)", text):
        modules.update(m for m in group.split("|") if m and m not in ("pytest", "pip", "venv"))
    missing = [m for m in sorted(modules) if not (ROOT / (m.replace(".", "/") + ".py")).is_file()]
    assert not missing, f"{doc}: python -m of missing modules {missing}"


def _where_things_live() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Where things live")
    return text[start:text.index("\n## ", start + 1)]


def test_where_things_live_paths_exist():
    section = _where_things_live()
    paths = [p for row in section.splitlines() if row.startswith("| `")
             for p in re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert paths
    missing = [p for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f'README "Where things live" names missing paths: {missing}'
    for top in ("scripts/", "docs/", ".ci/", "data/render.py"):
        assert f"`{top}`" in section, f'README "Where things live" omits {top}'
