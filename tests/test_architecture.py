"""The layer rules of DESIGN.md, enforced: imports point one way only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"storage", "training", "graph_api", "deployments", "cluster"}

# package -> the modules of ours it may import (a prefix match on the dotted name)
ALLOWED: dict[str, tuple[str, ...]] = {
    "storage": ("storage",),
    "training": ("storage", "training"),
    "graph_api": ("storage", "graph_api"),
    "deployments": (
        "storage",
        "graph_api",
        "deployments",
        "training.algorithms",
        "training.hybrid",
        "training.data",
    ),
    "cluster": tuple(OURS),
}
# Third-party modules a package must never import at all.
FORBIDDEN_THIRD_PARTY = {"graph_api": ("ray",), "storage": ("ray", "torch")}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(
                (node.lineno, f"{node.module}.{alias.name}")
                if node.module.split(".")[0] in OURS
                else (node.lineno, node.module)
                for alias in node.names
            )
    return found


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layer_direction(package: str) -> None:
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if top in OURS and not _allowed(name, ALLOWED[package]):
                violations.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, ()):
                violations.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from deployments.app import build_app\nimport training.pipeline\n")
    names = [name for _, name in _imports(bad)]
    assert "deployments.app.build_app" in names
    assert not _allowed("training.pipeline", ALLOWED["deployments"])


def test_serving_modules_do_not_load_torch_or_ray_train() -> None:
    modules = [p.stem for p in (ROOT / "deployments").glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('deployments.' + m)\n"
        "bad = [m for m in ('torch', 'ray.train') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
