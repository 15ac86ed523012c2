"""The chart's per-service images, autoscaling on queue depth (KEDA ScaledObjects, or
HPAs on prometheus-adapter's Pods metrics) and the gateway's Ingresses: rendered, checked
against Kubernetes' schemas and checkov's policies, and wired to metrics the services
really export. Nothing here reaches a cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    SERVICES,
    _template,
    checkov,
    container,
    crd_free,
    deployment,
    helm,
    kubernetes_validate,
    objects,
)
from tests.support import ROOT

KEDA = ("embedder", "generator")
QUEUE = ("retriever", "gateway")
SCALED = (
    *(f"{s}.autoscaling.enabled=true" for s in SERVICES),
    *(f"{s}.autoscaling.mode=keda" for s in KEDA),
    *(f"{s}.autoscaling.mode=queue" for s in QUEUE),
    "image.registry=registry.example.com/platform/",
    "image.tag=1.2.3",
    "generator.image.digest=sha256:" + "a" * 64,
    "gateway.ingress.enabled=true",
    "gateway.ingress.className=nginx",
    "gateway.ingress.http.host=rag.example.com",
    "gateway.ingress.grpc.host=grpc.rag.example.com",
    "gateway.ingress.tls.secretName=rag-example-tls",
)
# The prometheus-adapter rules that serve the HPAs' Pods metrics (docs/deploy.md).
ADAPTER_VALUES = CHART / "files" / "prometheus-adapter" / "values.yaml"
METRIC_SOURCES = [
    *sorted((ROOT / "services").glob("*/metrics.py")),
    ROOT / "src/ragplane/telemetry.py",
]


def render(*sets: str) -> list[dict[str, Any]]:
    args = tuple(a for s in sets for a in ("--set", s))
    return [doc for doc in yaml.safe_load_all(_template(args)) if doc]


def exported_metrics() -> set[str]:
    """Every metric name the services define (prometheus_client adds _total, _sum, ...)."""
    names = set()
    for path in METRIC_SOURCES:
        names.update(re.findall(r'"(ragplane_[a-z0-9_]+)"', path.read_text()))
    return names


def exported(series: str) -> bool:
    base = re.sub(r"_(total|sum|count|bucket)$", "", series)
    return series in exported_metrics() or base in exported_metrics()


def adapter_metrics() -> dict[str, list[str]]:
    """Pods metric name -> the series its prometheus-adapter rule reads."""
    served: dict[str, list[str]] = {}
    for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]:
        query = rule["seriesQuery"]
        series = re.findall(r"ragplane_[a-z0-9_]+", query)
        if rule["name"]["as"] == "${1}":
            for name in series:
                served[name] = [name]
        else:
            served[rule["name"]["as"]] = series
    return served


def test_each_service_runs_its_own_image():
    default = render()
    for name in SERVICES:
        assert container(default, name)["image"] == f"ragplane-{name}:0.1.0"
    docs = render(*SCALED)
    for name in ("embedder", "retriever", "gateway"):
        assert (
            container(docs, name)["image"] == f"registry.example.com/platform/ragplane-{name}:1.2.3"
        )
    assert container(docs, "generator")["image"] == (
        "registry.example.com/platform/ragplane-generator@sha256:" + "a" * 64
    )


def test_keda_scales_on_each_services_queue_metric():
    docs = render(*SCALED)
    scaled = objects(docs, "ScaledObject")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in objects(docs, "HorizontalPodAutoscaler").values()
    }
    assert len(scaled) == len(KEDA)
    for name in KEDA:
        target = deployment(docs, name)["metadata"]["name"]
        (found,) = [s for s in scaled.values() if s["spec"]["scaleTargetRef"]["name"] == target]
        assert target not in hpas, "KEDA makes the HPA itself"
        assert "replicas" not in deployment(docs, name)["spec"], "the autoscaler owns replicas"
        (trigger,) = found["spec"]["triggers"]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        query = trigger["metadata"]["query"]
        series = re.findall(r"(ragplane_[a-z0-9_]+)\{", query)
        assert series and all(exported(s) for s in series), query
        assert f'namespace="{NAMESPACE}"' in query and f'job="ragplane-{name}"' in query
        assert float(trigger["metadata"]["threshold"]) > 0
        assert trigger["metadata"]["serverAddress"].startswith("http")
    assert "ragplane_generator_queued_requests" in next(
        s["spec"]["triggers"][0]["metadata"]["query"]
        for s in scaled.values()
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "generator"
    )


def test_queue_mode_is_an_hpa_on_prometheus_adapter_pods_metrics():
    docs = render(*SCALED)
    hpas = objects(docs, "HorizontalPodAutoscaler")
    for name in QUEUE:
        target = deployment(docs, name)["metadata"]["name"]
        (hpa,) = [h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"] == target]
        metrics = hpa["spec"]["metrics"]
        assert metrics and all(m["type"] == "Pods" for m in metrics)
        for metric in metrics:
            served = adapter_metrics()[metric["pods"]["metric"]["name"]]
            assert served and all(exported(s) for s in served), served
            assert metric["pods"]["target"]["type"] == "AverageValue"
    gateway = next(
        h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"].endswith("gateway")
    )
    assert {m["pods"]["metric"]["name"] for m in gateway["spec"]["metrics"]} == {
        "ragplane_gateway_asks_in_flight",
        "ragplane_gateway_asks_queued",
    }
    # Every service's queue metric is served, whichever services use the mode.
    every = render(
        *(f"{s}.autoscaling.{k}" for s in SERVICES for k in ("enabled=true", "mode=queue"))
    )
    for hpa in objects(every, "HorizontalPodAutoscaler").values():
        for metric in hpa["spec"]["metrics"]:
            assert metric["pods"]["metric"]["name"] in adapter_metrics()


def test_an_unknown_autoscaling_mode_is_refused():
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "embedder.autoscaling.enabled=true",
        "--set",
        "embedder.autoscaling.mode=memory",
    )
    assert result.returncode != 0 and "use cpu, queue or keda" in result.stderr


def test_gateway_ingresses_reach_its_grpc_and_http_ports():
    docs = render(*SCALED)
    ingresses = objects(docs, "Ingress")
    gateway = deployment(docs, "gateway")["metadata"]["name"]
    service = objects(docs, "Service")[gateway]
    ports = {p["name"] for p in service["spec"]["ports"]}
    hosts = {}
    for ingress in ingresses.values():
        (rule,) = ingress["spec"]["rules"]
        (path,) = rule["http"]["paths"]
        backend = path["backend"]["service"]
        assert backend["name"] == gateway and backend["port"]["name"] in ports
        assert ingress["spec"]["tls"] == [
            {"hosts": [rule["host"]], "secretName": "rag-example-tls"}
        ]
        assert ingress["spec"]["ingressClassName"] == "nginx"
        hosts[backend["port"]["name"]] = (rule["host"], ingress["metadata"].get("annotations", {}))
    assert hosts["http"][0] == "rag.example.com"
    assert hosts["grpc"] == (
        "grpc.rag.example.com",
        {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"},
    )
    assert not objects(render(), "Ingress")
    result = helm("template", RELEASE, str(CHART), "--set", "gateway.ingress.enabled=true")
    assert result.returncode != 0 and "gateway.ingress.http.host" in result.stderr


def test_scaled_render_passes_helm_lint_strict():
    args = [a for s in SCALED for a in ("--set", s)]
    result = helm("lint", "--strict", str(CHART), *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaled_render_passes_kubernetes_schemas(tmp_path: Path):
    # KEDA's ScaledObject has no schema here; the tests above check its content.
    docs = [d for d in crd_free(render(*SCALED)) if not d["apiVersion"].startswith("keda.sh/")]
    manifest = tmp_path / "scaled.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    kubernetes_validate(manifest)


def test_scaled_render_passes_checkov(tmp_path: Path):
    manifest = tmp_path / "scaled.yaml"
    manifest.write_text(_template(tuple(a for s in SCALED for a in ("--set", s))))
    checkov(manifest, tmp_path)
