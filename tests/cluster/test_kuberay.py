"""The KubeRay RayJob manifest parses and runs the same `recserve train` a user runs locally."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from storage.settings import Settings

MANIFEST = Path(__file__).resolve().parents[2] / "cluster" / "kuberay" / "rayjob-train.yaml"
IMAGE = "recserve:latest"  # what cluster/Dockerfile is built as


def _job() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def test_rayjob_trains_one_tenant_with_two_workers() -> None:
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    outer = shlex.split(job["spec"]["entrypoint"])
    assert outer[:2] == ["bash", "-c"]  # expanded by the driver's shell, not the submitter's
    command = shlex.split(outer[2])
    assert command[:2] == ["recserve", "train"]
    assert command[command.index("--tenant") + 1] == "$RECSERVE_TRAIN_TENANT"
    assert "--distributed" in command and command[command.index("--workers") + 1] == "2"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["RECSERVE_TRAIN_TENANT"]


def test_every_pod_runs_the_project_image_with_the_same_settings() -> None:
    job = _job()
    containers = _containers(job)
    assert len(containers) == 2 and {c["image"] for c in containers} == {IMAGE}
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert sum(g["replicas"] for g in workers) >= 2  # one pod per training worker
    settings_fields = {f"RECSERVE_{name.upper()}" for name in Settings.model_fields}
    environments = []
    for container in containers:
        names = {e["name"]: e["value"] for e in container["env"]}
        assert names["RAY_AUTH_MODE"] == "disabled"
        assert {n for n in names if n.startswith("RECSERVE_")} <= settings_fields
        environments.append((names, container["envFrom"]))
    assert all(env == environments[0] for env in environments)
    dockerfile = MANIFEST.parents[1] / "Dockerfile"
    if dockerfile.exists():  # the image must ship the command the entrypoint calls
        assert "recserve" in dockerfile.read_text()
