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
import tomllib
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
    local = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    # The differences: a proxy on every node of the cluster (HeadOnly on a laptop), and the
    # config's own `cluster:` changes (one engine deployment per algorithm, no engine pool).
    assert (local["proxy_location"], embedded["proxy_location"]) == ("HeadOnly", "EveryNode")
    assert embedded == manifests.for_cluster(local) | {"proxy_location": "EveryNode"}
    assert "cluster" in local and "cluster" not in embedded
    [app] = embedded["applications"]
    assert app["args"]["engine_groups"] == {}
    names = {d["name"] for d in app["deployments"]}
    assert {f"engine_{a}" for a in app["args"]["engines"]} <= names
    assert not set(local["applications"][0]["args"]["engine_groups"]) & names


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
    # every package the wheel holds (pyproject's include list) is copied into the build
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [pattern.rstrip("*") for pattern in include]
    assert "recommend" in packages and "jobs" in packages
    for package in packages:
        assert f"COPY --chown=ray:users {package} " in text, package


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    steps = _instructions((ROOT / "cluster" / "Dockerfile").read_text())
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 2 and " AS " in stages[0].upper()
    build = stages[0].split()[-1]
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert any(op == "COPY" and f"--from={build}" in args for op, args in final)
    # The source tree stays in the build stage.
    assert not any(op == "COPY" and args.split()[-2:-1] == ["storage"] for op, args in final)
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    [check] = [args for op, args in final if op == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/health/live" in check  # open path: no token in the image


def _head(document: dict[str, Any]) -> dict[str, Any]:
    cluster = document["spec"].get("rayClusterConfig") or document["spec"]
    return cluster["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_the_serving_head_is_probed_on_the_apps_open_health_path() -> None:
    service = documents(manifests.RAYSERVICE)[0]
    head = _head(service)
    probe = head["livenessProbe"]["httpGet"]
    assert probe["path"] == "/health/live" and "httpHeaders" not in probe
    serve_port = next(p["containerPort"] for p in head["ports"] if p["name"] == "serve")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert probe["port"] == serve_port == serve_config["http_options"]["port"]
    # Every pod runs an HTTP proxy in the cluster: each is probed through its own.
    assert serve_config["proxy_location"] == "EveryNode"
    # The app needs minutes to deploy every engine: no restart before that.
    assert head["livenessProbe"]["initialDelaySeconds"] >= 120
    # KubeRay deploys the app to a Ready head only: readiness must not wait for the app.
    assert "readinessProbe" not in head
    # The workers take traffic only once their proxy reaches a ready app.
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    [container] = worker["containers"]
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/health/ready" and "httpHeaders" not in ready
    assert ready["port"] == serve_port
    assert any(p["containerPort"] == serve_port for p in container["ports"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # The development cluster may run no app at all.
    assert "livenessProbe" not in _head(documents(manifests.RAYCLUSTER)[0])


def test_the_ingress_terminates_tls_in_front_of_the_serve_service() -> None:
    [ingress] = documents(ROOT / "cluster" / "k8s" / "ingress.yaml")
    assert (ingress["apiVersion"], ingress["kind"]) == ("networking.k8s.io/v1", "Ingress")
    [tls] = ingress["spec"]["tls"]
    assert tls["secretName"]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"]
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    # KubeRay names the serve Service after the RayService.
    service = documents(manifests.RAYSERVICE)[0]
    assert backend["name"] == f"{service['metadata']['name']}-serve-svc"
    assert backend["port"]["number"] == manifests.SERVE_PORT


ALERTMANAGER = ROOT / "cluster" / "prometheus" / "alertmanager.yml"
MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!=|=)\s*"(.*)"\s*$')


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        name, operator, value = MATCHER.match(matcher).groups()
        actual = labels.get(name, "")
        hit = re.fullmatch(value, actual) is not None if operator == "=~" else actual == value
        if hit == (operator == "!="):
            return False
    return True


def _receiver(route: dict[str, Any], labels: dict[str, str]) -> str:
    """Alertmanager's routing: the first matching child route, depth first, else the parent."""
    for child in route.get("routes", []):
        if _matches(child.get("matchers", []), labels):
            return _receiver(child, labels)
    return route["receiver"]


def test_every_alert_rule_is_routed_by_its_severity() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    rules = yaml.safe_load((ROOT / "cluster" / "prometheus" / "alerts.yml").read_text())
    routed = {}
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        severity = rule["labels"]["severity"]
        receiver = _receiver(config["route"], {"alertname": rule["alert"], **rule["labels"]})
        assert receiver in receivers, (rule["alert"], receiver)
        routed.setdefault(severity, set()).add(receiver)
    assert set(routed) == {"critical", "warning", "info"}
    assert all(len(names) == 1 for names in routed.values())  # one place per severity
    [paging] = routed["critical"]
    assert "pagerduty_configs" in receivers[paging]
    assert routed["critical"] != routed["info"]
    # Credentials come from mounted files, never from this file.
    text = ALERTMANAGER.read_text()
    assert "_file:" in text and "hooks.slack.com" not in text and "routing_key:" not in text
    scrape = yaml.safe_load((ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text())
    [manager] = scrape["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_the_routing_check_sees_an_unrouted_severity() -> None:
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert _receiver(route, {"severity": "critical"}) != _receiver(route, {"severity": "bogus"})
