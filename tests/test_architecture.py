"""The layer rules of docs/architecture.md ("Layers"), enforced: imports point one way only."""

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
        # The retraining rules, one implementation for `recserve retrain-due` and the
        # scheduler of the serving app (no torch, no pipeline: only storage and the registry).
        "jobs.policy",
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


PRODUCT = ("storage", "training", "graph_api", "deployments", "cluster")


def _modules(*packages: str) -> list[Path]:
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


def test_only_the_algorithm_registry_names_engines() -> None:
    """Engine names and traits live on the algorithm classes; nothing else keeps a list."""
    from training.algorithms import ALGORITHMS, ALIASES

    names = set(ALGORITHMS) | set(ALIASES)
    found = []
    for path in _modules(*PRODUCT):
        if path.is_relative_to(ROOT / "training" / "algorithms"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}")
    assert not found, "\n".join(found)


STEP = ("weighted_hybrid", "switching_hybrid", "mmr_diversify", "fan_out", "first_answer")


def test_one_implementation_of_the_recommendation_step() -> None:
    """Choosing, fanning out, blending and diversifying happen in ``recommend/step.py`` only;
    the combiner deployment and the in-process recommender both wrap its core."""
    users: dict[str, set[str]] = {}
    for path in _modules(*PRODUCT, "benchmarks"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name | ast.Attribute):
                name = node.id if isinstance(node, ast.Name) else node.attr
                if name in STEP:
                    users.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    definitions = {"training/hybrid.py", "recommend/fanout.py"}
    assert set(users) - definitions == {"recommend/step.py"}, users
    for shell in ("deployments/combiner.py", "recommend/inprocess.py"):
        assert "RecommendationCore(" in (ROOT / shell).read_text(), shell
