"""The cluster files agree with the code and validate against the Kubernetes and KubeRay schemas.

Kubernetes objects (and the pod templates inside the KubeRay ones) are checked with
``kubernetes-validate``'s bundled, offline v1.37 schemas in strict mode. No offline KubeRay CRD
schema is available here, so the KubeRay objects are checked against ``KUBERAY_V1``: the
documented ``ray.io/v1`` fields this project uses, closed to anything else (a typo fails).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cluster import manifests
from storage.metrics import RAY_PREFIX, SPECS, exported_names

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT = {"type": "object"}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


RAY_START = {"rayStartParams": STRING_MAP, "template": OBJECT}
RAY_CLUSTER_SPEC = closed(
    {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": OBJECT,
        "headServiceAnnotations": STRING_MAP,
        "headGroupSpec": closed({**RAY_START, "serviceType": {"type": "string"}}, ("template",)),
        "workerGroupSpecs": {
            "type": "array",
            "items": closed(
                {
                    **RAY_START,
                    "groupName": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "numOfHosts": {"type": "integer", "minimum": 1},
                },
                ("groupName", "template"),
            ),
        },
    },
    ("headGroupSpec",),
)
KUBERAY_V1: dict[str, dict[str, Any]] = {
    "RayCluster": RAY_CLUSTER_SPEC,
    "RayService": closed(
        {
            "serveConfigV2": {"type": "string"},
            "rayClusterConfig": RAY_CLUSTER_SPEC,
            "upgradeStrategy": OBJECT,
            "serveService": OBJECT,
        },
        ("rayClusterConfig",),
    ),
    "RayJob": closed(
        {
            "entrypoint": {"type": "string"},
            "runtimeEnvYAML": {"type": "string"},
            "jobId": {"type": "string"},
            "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
            "backoffLimit": {"type": "integer", "minimum": 0},
            "suspend": {"type": "boolean"},
            "rayClusterSpec": RAY_CLUSTER_SPEC,
            "clusterSelector": STRING_MAP,
            "submitterPodTemplate": OBJECT,
            "entrypointNumCpus": {"type": "number"},
            "entrypointResources": {"type": "string"},
            "metadata": STRING_MAP,
        },
        ("entrypoint",),
    ),
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_templates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    groups = [cluster.get("headGroupSpec", {}), *cluster.get("workerGroupSpecs", [])]
    return [group["template"] for group in groups if "template" in group]


def test_generated_manifests_are_up_to_date() -> None:
    assert manifests.stale() == [], "run `python -m cluster.manifests`"


def test_serve_config_v2_is_serve_config_yaml() -> None:
    service = documents(manifests.RAYSERVICE)[0]
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "serve_config.yaml").read_text())


KUBE_FILES = sorted((ROOT / "cluster" / "k8s").glob("*.yaml"))
KUBERAY_FILES = sorted((ROOT / "cluster" / "kuberay").glob("*.yaml"))


@pytest.mark.parametrize("path", KUBE_FILES, ids=lambda p: p.name)
def test_kubernetes_objects_validate(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_objects_validate(path: Path) -> None:
    for document in documents(path):
        assert document["apiVersion"] == "ray.io/v1"
        jsonschema.validate(document["spec"], KUBERAY_V1[document["kind"]])
        for template in pod_templates(document["spec"]):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kubernetes_validate.validate(wrapped | {"template": template}, K8S_VERSION, strict=True)


def test_the_structural_check_catches_a_typo() -> None:
    service = documents(manifests.RAYSERVICE)[0]
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service["spec"], KUBERAY_V1["RayService"])


METRIC = re.compile(r"\bray_[a-z_]+")


def queried_metrics(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((ROOT / "cluster" / "grafana" / "recserve.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = queried_metrics(exprs)
    assert used and used <= exported_names(RAY_PREFIX), used - exported_names(RAY_PREFIX)
    # ... and every metric the app defines has a panel.
    covered = {spec.name for spec in SPECS.values() if any(spec.name in e for e in exprs)}
    assert covered == set(SPECS)


def test_alert_rules_name_exported_metrics() -> None:
    rules = yaml.safe_load((ROOT / "cluster" / "prometheus" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = queried_metrics(exprs)
    assert used and used <= exported_names(RAY_PREFIX), used - exported_names(RAY_PREFIX)
    scrape = yaml.safe_load((ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} >= {"ray"}


def test_dockerfile_builds_on_the_official_ray_image() -> None:
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-py311" in text
    for package in ("storage", "training", "graph_api", "deployments", "cluster"):
        assert f"COPY --chown=ray:users {package} " in text
