"""The Helm chart in charts/ragplane: it lints, renders with the default and a
production-like values file, passes Kubernetes' schemas and checkov's policies, and wires
exactly what the code reads. Nothing here reaches a cluster."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

CHART = ROOT / "charts" / "ragplane"
PRODUCTION = CHART / "ci" / "production-values.yaml"
TOOLS = ROOT / ".ci" / "tools" / "bin"
RELEASE, NAMESPACE = "rp", "ragplane"
SERVICES = ("embedder", "retriever", "generator", "gateway")
# The chart's kubeVersion floor and the Kubernetes version of the helm client used here.
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")
# Any render exercises the env wiring; this one takes the branches the other two do not.
OPENAI_VARIANT = (
    "generator.backend=openai",
    "generator.openai.url=http://vllm-router:80",
    "generator.openai.model=Qwen/Qwen2.5-7B-Instruct",
    "generator.openai.apiKeySecret.name=vllm-key",
    "retriever.reranker.backend=causal-lm",
    "maxMessageBytes=134217728",
)
RENDERS = {"default": (), "production": ("-f", str(PRODUCTION))}
# Both TLS Secrets (the production render has them too, without a client CA).
TLS_VARIANT = ("tls.gateway.secretName=rp-gateway-tls", "tls.internal.secretName=rp-internal-tls")


def tool(name: str) -> str:
    """A tool from .ci/tools (or PATH); skip locally without it, fail in CI."""
    local = TOOLS / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs it with .ci/install-k8s-tools")
        pytest.skip(f"{name} is not installed (run .ci/install-k8s-tools)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("helm"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@functools.cache
def _template(args: tuple[str, ...]) -> str:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(name: str = "default", *sets: str) -> list[dict[str, Any]]:
    """The chart's objects for one of RENDERS, with --set overrides."""
    args = RENDERS[name] + tuple(a for s in sets for a in ("--set", s))
    return [doc for doc in yaml.safe_load_all(_template(args)) if doc]


def render_fails(*sets: str) -> str:
    """helm template's error for overrides the chart must refuse."""
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0, f"the chart rendered with {sets}"
    return result.stderr


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployment(docs: list[dict], service: str) -> dict:
    found = [
        d
        for d in objects(docs, "Deployment").values()
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == service
    ]
    assert len(found) == 1, f"{len(found)} Deployments of the {service}"
    return found[0]


def container(docs: list[dict], service: str) -> dict:
    (only,) = deployment(docs, service)["spec"]["template"]["spec"]["containers"]
    return only


def env(docs: list[dict], service: str) -> dict[str, Any]:
    """name -> value (or valueFrom) of the service's container."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs, service)["env"]}


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def crd_free(docs: list[dict]) -> list[dict]:
    return [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize("values", RENDERS)
def test_chart_passes_helm_lint_strict(values):
    result = helm("lint", "--strict", str(CHART), *RENDERS[values])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", RENDERS)
def test_every_service_has_a_deployment_service_and_disruption_budget(values):
    docs = render(values)
    services, budgets = objects(docs, "Service"), objects(docs, "PodDisruptionBudget")
    for name in SERVICES:
        pod = deployment(docs, name)["spec"]["template"]
        assert container(docs, name)["command"] == [f"ragplane-{name}"]
        labels = pod["metadata"]["labels"]
        assert [s for s in services.values() if selects(s["spec"]["selector"], labels)]
        assert [
            b for b in budgets.values() if selects(b["spec"]["selector"]["matchLabels"], labels)
        ]
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in objects(docs, "HorizontalPodAutoscaler").values()
    }
    if values == "production":
        assert scaled == {
            deployment(docs, s)["metadata"]["name"] for s in ("embedder", "retriever", "gateway")
        }
        for name in scaled:
            assert "replicas" not in objects(docs, "Deployment")[name]["spec"], (
                "the HPA owns replicas"
            )
    else:
        assert not scaled


@pytest.mark.parametrize("values", RENDERS)
def test_manifests_pass_kubernetes_schemas(values, tmp_path: Path):
    # The Prometheus Operator's kinds have no schema here; the tests below check them.
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(yaml.safe_dump_all(crd_free(render(values))))
    kubernetes_validate(manifest)


def kubernetes_validate(manifest: Path) -> None:
    """The manifest validates against every Kubernetes version's schemas, strictly."""
    for version in KUBERNETES_VERSIONS:
        result = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(manifest)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"Kubernetes {version}:\n{result.stdout}{result.stderr}"


def checkov_skips() -> list[str]:
    return yaml.safe_load((ROOT / ".checkov.yaml").read_text())["skip-check"]


def checkov(manifest: Path, cwd: Path) -> dict[str, Any]:
    """Checkov's report on the manifest with the repo's config; asserts no check failed."""
    result = subprocess.run(
        [
            tool("checkov"),
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "--skip-check",
            ",".join(checkov_skips()),
            "-f",
            str(manifest),
            "-o",
            "json",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed and result.returncode == 0, "\n".join(failed) or result.stderr
    return report


@pytest.mark.parametrize("values", RENDERS)
def test_manifests_pass_checkov(values, tmp_path: Path):
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(_template(RENDERS[values]))
    report = checkov(manifest, tmp_path)
    assert report["summary"]["resource_count"] >= 4 * 3


ENV_READ = re.compile(r"""(?:env_\w+|environ\.get|getenv)\(\s*f?["']([A-Z][^"']*)["']""")


@functools.cache
def variables_the_code_reads() -> list[re.Pattern]:
    """Every variable name the code reads through ragplane.config's env_* or os.environ;
    an f-string's {placeholder} stands for any upper-case word (a service's name)."""
    sources = [*(ROOT / "src" / "ragplane").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    names = {
        name
        for path in sources
        if "v1" not in path.relative_to(ROOT).parts
        for name in ENV_READ.findall(path.read_text())
    }
    return [_as_pattern(name) for name in names]


def _as_pattern(name: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]*\})", name)
    return re.compile("".join("[A-Z]+" if p.startswith("{") else re.escape(p) for p in parts))


def test_the_code_reading_variables_is_found():
    """Guards the contract test below: the source scan finds the reads it relies on."""
    patterns = variables_the_code_reads()
    known = (
        "RAGPLANE_MILVUS_URI",
        "RAGPLANE_EMBEDDER_ADDR",
        "RAGPLANE_GATEWAY_GENERATOR_TARGET",
        "RAGPLANE_GATEWAY_METRICS_ADDR",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    for name in known:
        assert any(p.fullmatch(name) for p in patterns), name
    assert not any(p.fullmatch("RAGPLANE_EMBEDDER_MODEL_PATH") for p in patterns)


@pytest.mark.parametrize(
    "docs",
    [
        pytest.param(lambda: render("default"), id="default"),
        pytest.param(lambda: render("production"), id="production"),
        pytest.param(lambda: render("default", *OPENAI_VARIANT), id="openai-backend"),
        pytest.param(
            lambda: render("default", "tls.gateway.clientCAKey=ca.crt", *TLS_VARIANT), id="tls"
        ),
    ],
)
def test_every_ragplane_and_otel_variable_the_chart_sets_is_read_by_the_code(docs):
    docs = docs()
    patterns = variables_the_code_reads()
    for name in SERVICES:
        unknown = [
            var
            for var in env(docs, name)
            if var.startswith(("RAGPLANE_", "OTEL_"))
            and not any(p.fullmatch(var) for p in patterns)
        ]
        assert not unknown, f"the {name} is given variables no code reads: {unknown}"


@pytest.mark.parametrize("values", RENDERS)
def test_each_service_listens_where_its_ports_probes_and_service_point(values):
    docs = render(values)
    for name in SERVICES:
        c, variables = container(docs, name), env(docs, name)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        address = variables[f"RAGPLANE_{name.upper()}_ADDR"]
        metrics = variables[f"RAGPLANE_{name.upper()}_METRICS_ADDR"]
        # Loopback (the code's default) would be unreachable from other pods.
        assert not address.startswith(("127.", "localhost")), address
        assert not metrics.startswith(("127.", "localhost")), metrics
        assert port_of(address) == ports["grpc"]
        assert port_of(metrics) == ports["metrics"]
        # A TLS gRPC port (production) has the probes ask the plaintext health port.
        probed = ports["grpc"]
        if "RAGPLANE_HEALTH_ADDR" in variables:
            probed = port_of(variables["RAGPLANE_HEALTH_ADDR"])
            assert probed == ports["health"] and probed not in (ports["grpc"], ports["metrics"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == probed, f"{name} {probe}"


def test_tls_comes_from_secrets_mounted_read_only_where_the_variables_point():
    docs = render("default", "tls.gateway.clientCAKey=ca.crt", *TLS_VARIANT)
    for name in SERVICES:
        pod = deployment(docs, name)["spec"]["template"]["spec"]
        variables = env(docs, name)
        secrets = {
            v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v and "tls" in v["name"]
        }
        mounts = {m["name"]: m for m in container(docs, name)["volumeMounts"]}
        wanted = {"tls-internal": "rp-internal-tls"}
        files = ["RAGPLANE_TLS_CERT", "RAGPLANE_TLS_KEY", "RAGPLANE_TLS_CA"]
        if name == "gateway":
            wanted["tls-public"] = "rp-gateway-tls"
            files += [
                "RAGPLANE_GATEWAY_TLS_CERT",
                "RAGPLANE_GATEWAY_TLS_KEY",
                "RAGPLANE_GATEWAY_TLS_CLIENT_CA",
            ]
        else:
            assert not any(v.startswith("RAGPLANE_GATEWAY_TLS") for v in variables), name
        assert {k: v["secretName"] for k, v in secrets.items()} == wanted, name
        assert all(mounts[volume]["readOnly"] is True for volume in wanted), name
        folders = {mounts[volume]["mountPath"] for volume in wanted}
        for variable in files:
            assert variables[variable].rpartition("/")[0] in folders, f"{name} {variable}"
        assert variables["RAGPLANE_TLS_SERVER_NAME"] == "ragplane.internal"
        assert "RAGPLANE_HEALTH_ADDR" in variables, f"{name}: probes cannot speak TLS"
    # Without the Secrets, nothing of TLS: plaintext, probes on the gRPC port.
    for name in SERVICES:
        assert not any("TLS" in v or v == "RAGPLANE_HEALTH_ADDR" for v in env(render(), name))


def test_the_jobs_database_comes_from_a_secret_to_the_gateway_only():
    docs = render("default", "gateway.jobs.dsnSecret.name=rp-jobs-db")
    assert env(docs, "gateway")["RAGPLANE_GATEWAY_JOBS_DSN"] == {
        "secretKeyRef": {"name": "rp-jobs-db", "key": "dsn"}
    }
    for name in SERVICES:
        if name != "gateway":
            assert "RAGPLANE_GATEWAY_JOBS_DSN" not in env(docs, name)
    assert "RAGPLANE_GATEWAY_JOBS_DSN" not in env(render(), "gateway")


@pytest.mark.parametrize("values", [*RENDERS, "openai-backend"])
def test_gateway_targets_are_the_rendered_services(values):
    docs = render("default", *OPENAI_VARIANT) if values == "openai-backend" else render(values)
    services = objects(docs, "Service")
    variables = env(docs, "gateway")
    for name in ("embedder", "retriever", "generator"):
        host, _, port = variables[f"RAGPLANE_GATEWAY_{name.upper()}_TARGET"].rpartition(":")
        assert host in services, f"{host} is no rendered Service"
        service = services[host]["spec"]
        labels = deployment(docs, name)["spec"]["template"]["metadata"]["labels"]
        assert selects(service["selector"], labels), f"{host} does not select the {name} pods"
        (grpc,) = [p for p in service["ports"] if p["port"] == int(port)]
        named = {p["name"]: p["containerPort"] for p in container(docs, name)["ports"]}
        assert named[grpc["targetPort"]] == port_of(
            env(docs, name)[f"RAGPLANE_{name.upper()}_ADDR"]
        )
        # Headless, so the gateway's round-robin channel sees every ready pod; the name
        # then resolves to pod addresses, with no port mapping: the port is the pod's.
        assert service["clusterIP"] == "None", f"{host} is not headless"
        assert int(port) == named[grpc["targetPort"]]
    for name in SERVICES:
        aged = env(docs, name)
        assert float(aged["RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS"]) > 0, name


@pytest.mark.parametrize("values", RENDERS)
def test_pods_run_locked_down_with_writable_state(values):
    docs = render(values)
    for name in SERVICES:
        pod = deployment(docs, name)["spec"]["template"]["spec"]
        c = container(docs, name)
        assert pod["automountServiceAccountToken"] is False
        # Service links would set RAGPLANE_<SERVICE>_PORT=tcp://..., which the CLI reads.
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        for path in (env(docs, name)["RAGPLANE_STATE_DIR"], "/tmp"):
            assert "emptyDir" in volumes[mounts[path]["name"]], f"{name}: {path} is not writable"
    accounts = objects(docs, "ServiceAccount")
    assert [a["automountServiceAccountToken"] for a in accounts.values()] == [False]


def test_models_come_from_the_read_only_volume_and_never_from_a_hub():
    docs = render("production")
    mount_path = "/models"
    for name, variable in (
        ("embedder", "RAGPLANE_EMBEDDER_MODEL_SOURCE"),
        ("generator", "RAGPLANE_GENERATOR_MODEL_PATH"),
    ):
        c = container(docs, name)
        assert env(docs, name)[variable].startswith(mount_path + "/")
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == mount_path]
        assert mount["readOnly"] is True
        volumes = {
            v["name"]: v for v in deployment(docs, name)["spec"]["template"]["spec"]["volumes"]
        }
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "ragplane-models"
    for name in SERVICES:
        assert env(docs, name)["HF_HUB_OFFLINE"] == "1"
    assert not objects(docs, "PersistentVolumeClaim"), "an existing claim is used as is"


def test_chart_refuses_hub_downloads_missing_volumes_and_clashing_settings():
    assert "allowHubDownloads" in render_fails("embedder.model.source=hub")
    assert "models.enabled" in render_fails("embedder.model.source=volume", "embedder.model.path=m")
    assert "only RAGPLANE_" in render_fails("gateway.config.HOME=/")
    clash = "gateway.config.RAGPLANE_GATEWAY_EMBEDDER_TARGET=elsewhere:1"
    assert "the chart sets this variable itself" in render_fails(clash)
    allowed = render("default", "embedder.model.source=hub", "allowHubDownloads=true")
    assert env(allowed, "embedder")["RAGPLANE_EMBEDDER_MODEL_SOURCE"] == "hub"
    assert "HF_HUB_OFFLINE" not in env(allowed, "embedder")


def test_generator_runs_vllm_on_a_gpu_or_calls_an_external_vllm_server():
    gpu = container(render("production"), "generator")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(render("production"), "generator")["RAGPLANE_GENERATOR_BACKEND"] == "vllm"
    remote = render("default", *OPENAI_VARIANT)
    variables = env(remote, "generator")
    assert variables["RAGPLANE_GENERATOR_BACKEND"] == "openai"
    assert variables["RAGPLANE_GENERATOR_OPENAI_URL"] == "http://vllm-router:80"
    assert variables["RAGPLANE_GENERATOR_OPENAI_API_KEY"]["secretKeyRef"]["name"] == "vllm-key"
    assert "nvidia.com/gpu" not in container(remote, "generator")["resources"].get("limits", {})
    assert "generator.gpu.count" in render_fails(*OPENAI_VARIANT, "generator.gpu.count=1")
    assert "generator.openai.url" in render_fails("generator.backend=openai")


def test_the_generator_model_is_named_from_the_catalogue():
    from ragplane.generator.model import DEFAULT_MODEL
    from ragplane.models import GENERATORS

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["generator"]["model"]["name"] == DEFAULT_MODEL
    assert env(render("default"), "generator")["RAGPLANE_GENERATOR_MODEL"] == DEFAULT_MODEL
    for name in GENERATORS:
        docs = render("default", f"generator.model.name={name}")
        assert env(docs, "generator")["RAGPLANE_GENERATOR_MODEL"] == name
    assert "not in the catalogue" in render_fails("generator.model.name=gpt-5")


@pytest.mark.parametrize("values", RENDERS)
def test_network_policy_lets_only_the_gateway_in_from_outside_the_release(values):
    # On by default; production narrows the gateway's callers to the ingress controller.
    docs = render(values)
    policies = objects(docs, "NetworkPolicy")
    release = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/name": "ragplane"}
    for name in SERVICES:
        labels = deployment(docs, name)["spec"]["template"]["metadata"]["labels"]
        (policy,) = [
            p["spec"]
            for p in policies.values()
            if selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        (grpc,) = [r for r in policy["ingress"] if r["ports"][0]["port"] == "grpc"]
        if name == "gateway" and values == "production":
            assert grpc["from"][0]["namespaceSelector"], "the gateway admits its ingress"
        elif name == "gateway":
            assert "from" not in grpc, "any source may call the gateway"
            assert {p["port"] for p in grpc["ports"]} == {"grpc", "http"}
        else:
            assert grpc["from"] == [{"podSelector": {"matchLabels": release}}]
        egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
        assert 53 in egress_ports
        if values == "production":
            assert 4317 in egress_ports, "the OTel collector"
        if name == "retriever":
            assert 19530 in egress_ports, "Milvus"
        if name == "gateway":
            assert {50051, 50052, 50053} <= egress_ports


def test_service_monitor_scrapes_every_service_as_the_jobs_the_alerts_expect():
    docs = render("production")
    (monitor,) = objects(docs, "ServiceMonitor").values()
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    # The metrics' own `service` label must survive the operator's target labels.
    assert endpoint["honorLabels"] is True
    scraped = [
        s
        for s in objects(docs, "Service").values()
        if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    jobs = sorted(s["metadata"]["labels"][spec["jobLabel"]] for s in scraped)
    assert jobs == sorted(f"ragplane-{name}" for name in SERVICES)
    for service in scraped:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert not objects(render("default"), "ServiceMonitor"), "off without the operator's CRDs"


def test_prometheus_rule_holds_exactly_the_alert_rule_groups():
    files = sorted((CHART / "files" / "prometheus").glob("*.yaml"))
    expected = [
        group
        for path in files
        if not path.name.endswith(".test.yaml")
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert expected
    (rule,) = objects(render("production"), "PrometheusRule").values()
    assert rule["spec"]["groups"] == expected
    assert not objects(render("default"), "PrometheusRule")


def test_dashboards_config_map_holds_every_dashboard():
    (dashboards,) = [
        c
        for c in objects(render("default"), "ConfigMap").values()
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    files = {
        p.name: json.loads(p.read_text()) for p in (CHART / "files" / "grafana").glob("*.json")
    }
    assert len(files) >= 5
    assert {name: json.loads(text) for name, text in dashboards["data"].items()} == files
