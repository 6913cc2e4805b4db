"""The cluster files agree with the code and validate against the Kubernetes and KubeRay schemas.

Kubernetes objects (and the pod templates inside the KubeRay ones) are checked with
``kubernetes-validate``'s bundled, offline v1.37 schemas in strict mode. KubeRay objects are
checked against the real ``ray.io/v1`` CRDs (``../shared/schemas/kuberay``, the operator's
published ``openAPIV3Schema``), closed the way the API server prunes: an object schema with
``properties`` and no ``additionalProperties`` admits no other field, unless it says
``x-kubernetes-preserve-unknown-fields``. Without the CRDs (a fresh clone) that test skips.
"""

from __future__ import annotations

import json
import re
from functools import cache
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
CRDS = ROOT.parent / "shared" / "schemas" / "kuberay"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
needs_crds = pytest.mark.skipif(
    not (CRDS / CRD_FILES["RayService"]).exists(), reason=f"KubeRay CRDs not found at {CRDS}"
)


def json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI schema as a JSON Schema that also refuses unknown fields."""
    if isinstance(node, list):
        return [json_schema(entry) for entry in node]
    if not isinstance(node, dict):
        return node
    schema = {k: json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    open_object = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not open_object:
        schema["additionalProperties"] = False
    return schema


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return json_schema(version["schema"]["openAPIV3Schema"])


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_templates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    spec = spec.get("jobTemplate") or spec  # a RayCronJob's runs are RayJobs
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


@needs_crds
@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_objects_validate(path: Path) -> None:
    for document in documents(path):
        assert document["apiVersion"] == "ray.io/v1"
        jsonschema.validate(document, crd_schema(document["kind"]))
        for template in pod_templates(document["spec"]):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kubernetes_validate.validate(wrapped | {"template": template}, K8S_VERSION, strict=True)


@needs_crds
def test_the_cron_job_is_checked_down_to_its_pods() -> None:
    [cron] = documents(ROOT / "cluster" / "kuberay" / "raycronjob-retrain.yaml")
    assert len(pod_templates(cron["spec"])) == 2  # head and workers, as Kubernetes pods
    cron["spec"]["jobTemplate"]["entrypont"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cron, crd_schema("RayCronJob"))


@needs_crds
@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        (("spec", "rayClusterConfig", "headGroupSpec"), "rayStartParam", {}),  # a typo
        (("spec", "rayClusterConfig"), "authOptions", {"mode": "password"}),  # not in the enum
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0), "replicas", "two"),
        (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec"), "containerz", []),
    ],
)
def test_the_crd_check_catches_mistakes(where: tuple[Any, ...], field: str, value: Any) -> None:
    service = documents(manifests.RAYSERVICE)[0]
    jsonschema.validate(service, crd_schema("RayService"))
    target: Any = service
    for key in where:
        target = target[key]
    target[field] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, crd_schema("RayService"))


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
