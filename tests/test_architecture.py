"""The layer rules of docs/architecture.md, enforced: imports point one way only.

storage < training < ingest < jobs < recommend < graph_api < deployments < cluster: a package
imports its own modules and those of the layers below it that it names here, nothing above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = (
    "storage",
    "training",
    "ingest",
    "jobs",
    "recommend",
    "graph_api",
    "deployments",
    "cluster",
)
OURS = set(PRODUCT)
# What serving may import of training: the algorithms (numpy at inference), the hybrid's
# blend and its vocabulary, the data types. Never the pipeline, which brings torch.
SERVING_TRAINING = ("training.algorithms", "training.hybrid", "training.data")

# package -> the modules of ours it may import (a prefix match on the dotted name)
ALLOWED: dict[str, tuple[str, ...]] = {
    "storage": ("storage",),
    "training": ("storage", "training"),
    "ingest": ("storage", "training.data", "ingest"),
    # Job records and runners; the pipeline itself is named by an entry-point string only.
    "jobs": ("storage", "jobs", "training.algorithms"),
    "recommend": ("storage", "jobs", "recommend", *SERVING_TRAINING),
    # The GraphQL edge: the service's types, the job records it reads, customer data import.
    "graph_api": ("storage", "graph_api", "recommend.types", "jobs.ledger", "ingest"),
    "deployments": (
        "storage",
        "jobs",
        "recommend",
        "graph_api",
        "deployments",
        *SERVING_TRAINING,
    ),
    "cluster": tuple(OURS),
}
# Third-party modules a package must never import at all (Ray in ``jobs`` only in its Ray
# runner, checked below).
TRANSPORTS = ("ray", "strawberry", "fastapi", "starlette")
FORBIDDEN_THIRD_PARTY = {
    "storage": ("ray", "torch"),
    "recommend": (*TRANSPORTS, "torch"),
    "graph_api": ("ray", "torch"),
}
RAY_IN_JOBS = {"jobs/ray_runner.py"}


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
        where = str(path.relative_to(ROOT))
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if top in OURS and not _allowed(name, ALLOWED[package]):
                violations.append(f"{where}:{lineno} imports {name}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, ()):
                violations.append(f"{where}:{lineno} imports {name}")
            if package == "jobs" and top == "ray" and where not in RAY_IN_JOBS:
                violations.append(f"{where}:{lineno} imports {name}")
    assert not violations, "\n".join(violations)


def test_deployments_holds_only_ray_modules() -> None:
    """Everything without Ray lives in the layers below: ``deployments`` is the Serve shell."""
    plain = []
    for path in sorted((ROOT / "deployments").glob("*.py")):
        if path.stem == "__init__":
            continue
        if not any(name.split(".")[0] == "ray" for _, name in _imports(path)):
            plain.append(str(path.relative_to(ROOT)))
    assert not plain, f"no Ray import, so not a deployments module: {plain}"


# Base names that would say two things if two modules of the product had them.
UNIQUE_NAMES = ("scheduler", "jobs", "models", "registry", "limits", "metrics")


def test_no_two_modules_share_a_colliding_name() -> None:
    seen: dict[str, list[str]] = {}
    for path in _modules(*PRODUCT):
        if path.stem in UNIQUE_NAMES:
            seen.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}, seen


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from deployments.app import build_app\nimport training.pipeline\n")
    names = [name for _, name in _imports(bad)]
    assert "deployments.app.build_app" in names
    assert not _allowed("training.pipeline", ALLOWED["deployments"])
    assert not _allowed("deployments.app", ALLOWED["graph_api"])
    assert not _allowed("graph_api.types", ALLOWED["recommend"])


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


def test_the_api_edge_does_not_load_ingest_or_pyarrow() -> None:
    # Every ingress replica imports graph_api.app: a file import's pyarrow is loaded only when
    # a file is imported (graph_api.tenant_admin imports ingest where it is used).
    code = (
        "import sys, graph_api.app\n"
        "bad = [m for m in ('pyarrow', 'ingest.files', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


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
    the combiner deployment and the in-process service both wrap it."""
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
        assert "RecommendationStep(" in (ROOT / shell).read_text(), shell
