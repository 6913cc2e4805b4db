"""The deployment files keep secrets in Secrets and lock the control planes (Redis, Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cluster import manifests
from storage.settings import is_secret_setting

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "cluster" / "k8s"
KUBERAY = sorted((ROOT / "cluster" / "kuberay").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def cluster_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    spec = spec.get("jobTemplate") or spec  # a RayCronJob's runs are RayJobs
    return spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec


def ray_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = cluster_spec(document)
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_redis_requires_the_secret_password_with_protected_mode_on() -> None:
    config_map, _service, stateful_set = documents(K8S / "redis-cluster.yaml")
    conf = config_map["data"]["redis.conf"]
    assert "protected-mode yes" in conf and "protected-mode no" not in conf
    assert "include /run/redis/auth.conf" in conf
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "recserve-secrets", "key": "redis-password"}
    started = " ".join(container["command"] + container["args"])
    assert "requirepass" in started and "masterauth" in started
    assert (
        "redis-password" in yaml.safe_load((K8S / "secrets.example.yaml").read_text())["stringData"]
    )


def test_ray_pods_reach_redis_with_the_password_and_secrets_only_by_reference() -> None:
    for path in KUBERAY:
        for document in documents(path):
            for container in ray_containers(document):
                names = [e["name"] for e in container["env"]]
                env = {e["name"]: e for e in container["env"]}
                password = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
                assert password["key"] == "redis-password", path.name
                url = env["RECSERVE_REDIS_URL"]["value"]
                assert ":$(REDIS_PASSWORD)@" in url
                assert names.index("REDIS_PASSWORD") < names.index("RECSERVE_REDIS_URL")
                for entry in container["env"]:  # no secret written into a manifest
                    if "value" in entry and entry["name"] != "RECSERVE_REDIS_URL":
                        assert not is_secret_setting(entry["name"], entry["value"]), entry


def test_ray_dashboards_need_a_token_and_the_dev_one_listens_on_loopback() -> None:
    for path in KUBERAY:
        for document in documents(path):
            assert cluster_spec(document)["authOptions"] == {"mode": "token"}, path.name
            for container in ray_containers(document):
                names = {e["name"] for e in container["env"]}
                assert "RAY_AUTH_MODE" not in names  # the operator sets token mode
    dev = documents(manifests.RAYCLUSTER)[0]
    head = dev["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["dashboard-host"] == "127.0.0.1"


def test_the_serve_config_neither_carries_secrets_nor_overrides_production() -> None:
    service = documents(manifests.RAYSERVICE)[0]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    for application in serve_config["applications"]:
        env_vars = application.get("runtime_env", {}).get("env_vars", {})
        # runtime_env wins over the pod's environment: RECSERVE_ENV=production must survive.
        assert "RECSERVE_ENV" not in env_vars
        assert not any(is_secret_setting(k, str(v)) for k, v in env_vars.items())
        assert not any(is_secret_setting(k, str(v)) for k, v in application["args"].items())
    pods = {e["name"]: e for e in ray_containers(service)[0]["env"]}
    assert pods["RECSERVE_ENV"]["value"] == "production"
