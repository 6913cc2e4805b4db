"""The KubeRay RayJob manifest parses and runs the same `recserve train` a user runs locally;
the RayCronJob runs `recserve retrain-due` on a schedule, on the same cluster spec."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from storage.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "cluster" / "kuberay" / "rayjob-train.yaml"
CRON = ROOT / "cluster" / "kuberay" / "raycronjob-retrain.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"


def _project_image() -> str:
    """``recserve:{package version}``, the tag cluster/Dockerfile is built as."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"recserve:{version}"


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
    assert len(containers) == 2 and {c["image"] for c in containers} == {_project_image()}
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert sum(g["replicas"] for g in workers) >= 2  # one pod per training worker
    settings_fields = {f"RECSERVE_{name.upper()}" for name in Settings.model_fields}
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert container["env"] == containers[0]["env"]
        # Ray's token auth is on: the operator sets RAY_AUTH_MODE/RAY_AUTH_TOKEN (authOptions).
        assert "RAY_AUTH_MODE" not in env
        assert {n for n in env if n.startswith("RECSERVE_")} <= settings_fields
        assert {"RECSERVE_DATABASE_URL", "RECSERVE_ARTIFACT_URI"} <= set(env)
        secret = env["RECSERVE_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
        assert secret["name"] == "recserve-secrets"
    if DOCKERFILE.exists():  # the image the manifest names is the one the Dockerfile builds
        assert f"-t {_project_image()}" in DOCKERFILE.read_text()


def test_raycronjob_runs_retrain_due_on_the_training_cluster() -> None:
    cron = yaml.safe_load(CRON.read_text())
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert len(cron["spec"]["schedule"].split()) == 5  # a cron expression
    template = cron["spec"]["jobTemplate"]
    command = shlex.split(template["entrypoint"])
    assert command[:2] == ["recserve", "retrain-due"]
    assert command[command.index("--address") + 1] == "auto"  # Ray Train on this cluster
    assert "--loop" not in command  # the schedule repeats it, not the process
    assert template["shutdownAfterJobFinishes"] is True
    # The same cluster, image and settings as the one-off training job.
    assert template["rayClusterSpec"] == _job()["spec"]["rayClusterSpec"]
