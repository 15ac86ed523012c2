"""The whole stack as containers of the four service images, run the way the Helm chart
runs them, driven over gRPC and HTTP through ports published on 127.0.0.1 only.

Each service's container takes what `helm template` renders for it: the command, every
environment variable, the user, the read-only root filesystem, the dropped capabilities,
the emptyDirs (as tmpfs) and the read-only models volume (here the converted-model cache
of the tests, the chart's `models.enabled` with `generator.model.path`). All are on one
network under their Services' names, beside Milvus Lite in a container of its own (the
retriever image's `milvus-lite`, its data on a named volume) named `milvus`, as
`milvus.uri` says. A few minutes: the generator starts vLLM on CPU."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from ragplane import keys, models
from ragplane.client import GatewayError, GrpcClient, IngestStatus
from ragplane.ops import cli, processes
from tests.deploy import engine as engines
from tests.deploy.test_chart import CHART, NAMESPACE, RELEASE, tool
from tests.support import ROOT, shared_model_cache

CORPUS = ROOT / "samples" / "handbook"
COLLECTION = "containers"
QUESTION = "How do I roll back a bad deploy of ledger-api?"
DEPLOY = "runbooks/deploy.md"
T = 120  # deadline of every call, seconds
TENANT = "containers"
MILVUS_PORT = 19530
MILVUS_START_S = 60.0
# Published on the host's loopback only, on a port the engine picks.
LOOPBACK = ("127.0.0.1", None)


@dataclass
class Running:
    """One container of the stack and where its ports are published."""

    name: str
    container: Any  # testcontainers' DockerContainer
    ports: list[int]
    start_within_s: float

    def published(self, port: int) -> int:
        return self.container.get_exposed_port(port)

    def address(self, port: int) -> str:
        return f"127.0.0.1:{self.published(port)}"

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")[-4000:]


def rendered_deployments(models_folder: str) -> dict[str, dict]:
    """service -> its Deployment as the chart renders it for this stack."""
    result = subprocess.run(
        [
            tool("helm"),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--set",
            "models.enabled=true",
            "--set",
            f"generator.model.path={models_folder}",
            "--set-string",
            "generator.model.name=",
            "--set",
            f"milvus.uri=http://milvus:{MILVUS_PORT}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = {}
    for doc in yaml.safe_load_all(result.stdout):
        if doc and doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            found[labels["app.kubernetes.io/component"]] = doc
    assert set(found) == set(engines.SERVICES)
    return found


def service_names(deployments: dict[str, dict]) -> dict[str, str]:
    """service -> the name of its Service (the Deployment's), which the gateway's targets use."""
    return {service: d["metadata"]["name"] for service, d in deployments.items()}


def tmpfs_size(limit: str) -> str:
    """An emptyDir sizeLimit (Mi, Gi) as a tmpfs size (m, g)."""
    return limit.removesuffix("i").lower()


def tmpfs_options(size: str, podman: bool) -> str:
    """An emptyDir as tmpfs: writable by the pod's user and executable (torch compiles
    into it). podman ignores mode= on a folder the image has (the state dir) but takes
    U, which gives it to the container's user; Docker does not know U."""
    return f"size={size},mode=1777,exec" + (",U" if podman else "")


def container_of(
    deployment: dict, image: str, network: Any, models_dir: Path, secrets: Path, podman: bool
) -> Any:
    """A testcontainers container set up as the Deployment's one container; a Secret
    volume is the folder of that name under `secrets`, mounted read-only."""
    from testcontainers.core.container import DockerContainer

    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    security = spec["securityContext"]
    env = {}
    for variable in spec["env"]:
        assert "value" in variable, f"{variable['name']} comes from a Secret the suite lacks"
        env[variable["name"]] = variable["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmpfs, shm_size = {}, None
    container = DockerContainer(image, env=env)
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            assert mount.get("readOnly"), "the models volume is mounted read-only"
            container.with_volume_mapping(str(models_dir), mount["mountPath"], "ro")
        elif "secret" in volume:
            folder = secrets / volume["secret"]["secretName"]
            assert folder.is_dir(), f"the chart mounts Secret {folder.name}, the suite lacks it"
            container.with_volume_mapping(str(folder), mount["mountPath"], "ro")
        elif "emptyDir" not in volume:
            pytest.fail(f"volume {mount['name']}: the suite mounts emptyDirs, Secrets, the models")
        elif mount["mountPath"] == "/dev/shm":
            shm_size = tmpfs_size(volume["emptyDir"]["sizeLimit"])
        else:
            size = tmpfs_size(volume["emptyDir"]["sizeLimit"])
            tmpfs[mount["mountPath"]] = tmpfs_options(size, podman)
    for port in spec["ports"]:
        container.ports[f"{port['containerPort']}/tcp"] = LOOPBACK  # type: ignore[assignment]
    options: dict[str, Any] = {
        "user": f"{security['runAsUser']}:{security['runAsGroup']}",
        "read_only": security["readOnlyRootFilesystem"],
        "cap_drop": security["capabilities"]["drop"],
    }
    if not security["allowPrivilegeEscalation"]:
        options["security_opt"] = ["no-new-privileges"]
    if shm_size:
        options["shm_size"] = shm_size
    container.tmpfs = tmpfs
    return (
        container.with_command(spec["command"])
        .with_network(network)
        .with_network_aliases(deployment["metadata"]["name"])
        .with_name(f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:6]}")
        .with_kwargs(**options)
    )


def milvus_container(image: str, network: Any, volume: str, podman: bool) -> Any:
    """Milvus Lite's server from the retriever image, unprivileged, its data on `volume`."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image)
    container.ports[f"{MILVUS_PORT}/tcp"] = LOOPBACK  # type: ignore[assignment]
    container.tmpfs = {"/tmp": tmpfs_options("1g", podman)}
    return (
        container.with_command(
            ["milvus-lite", "server", "--data-dir", "/var/lib/ragplane/milvus"]
            + ["--host", "0.0.0.0", "--port", str(MILVUS_PORT)]
        )
        # A named volume takes the image's ownership of the folder (user 10001) when new.
        .with_volume_mapping(volume, "/var/lib/ragplane", "rw")
        .with_network(network)
        .with_network_aliases("milvus")
        .with_name(f"milvus-{uuid.uuid4().hex[:6]}")
        .with_kwargs(
            user="10001:10001",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
    )


async def wait_ready(running: Running, grpc_port: int | None) -> None:
    """Until gRPC health on the published port says SERVING (Milvus: accepts TCP), within
    what the chart's startup probe allows; fails with the container's log otherwise."""
    deadline = time.monotonic() + running.start_within_s
    while True:
        await asyncio.to_thread(running.container.reload)
        if running.container.status not in ("created", "running"):
            pytest.fail(f"{running.name} exited ({running.container.status}):\n{running.logs()}")
        port = await asyncio.to_thread(running.published, grpc_port or MILVUS_PORT)
        if grpc_port is None:
            if await processes.port_accepts("127.0.0.1", port):
                return
        elif await processes.serving(f"127.0.0.1:{port}"):
            return
        if time.monotonic() > deadline:
            waited = f"{running.start_within_s:.0f} s"
            pytest.fail(f"{running.name} not ready in {waited}:\n{running.logs()}")
        await asyncio.sleep(1.0)


@dataclass
class ContainerStack:
    milvus: Running
    services: dict[str, Running]
    grpc_ports: dict[str, int]
    http_port: int
    api_key: str

    def client(self) -> GrpcClient:
        """The gateway over gRPC, with the suite's key."""
        return GrpcClient(self.address("gateway"), api_key=self.api_key)

    def http(self) -> openai.AsyncOpenAI:
        """The gateway's OpenAI-compatible HTTP API, with the suite's key."""
        return openai.AsyncOpenAI(
            base_url=f"{self.http_url()}/v1", api_key=self.api_key, max_retries=0, timeout=T
        )

    def address(self, service: str) -> str:
        return self.services[service].address(self.grpc_ports[service])

    def http_url(self) -> str:
        return f"http://{self.services['gateway'].address(self.http_port)}"

    async def restart(self, running: Running, grpc_port: int | None) -> None:
        """SIGTERM (the chart's grace), start again, wait until ready."""
        await asyncio.to_thread(running.container.get_wrapped_container().restart, timeout=30)
        await wait_ready(running, grpc_port)


def converted_smollm2() -> Path:
    """The models volume: the tests' converted-model cache, with SmolLM2 converted into it
    (once, on this machine: the containers only read it)."""
    state = shared_model_cache()
    folder = models.converted(models.SMOLLM2_MODEL, state).path
    # The conversion writes its weights 0600 (a temporary file renamed into place); the
    # containers read them as user 10001, as pods read a models volume filled by others.
    for path in folder.iterdir():
        path.chmod(path.stat().st_mode | 0o444)
    return folder


def api_keys_secret(secrets: Path, deployments: dict[str, dict]) -> str:
    """The gateway's API keys Secret as a folder: a keys file with one writer key, made
    as `ragplane keys create --file` makes it (hashes only); returns the key."""
    pod = deployments["gateway"]["spec"]["template"]["spec"]
    (volume,) = [v["secret"] for v in pod["volumes"] if "secret" in v and "keys" in v["name"]]
    folder = secrets / volume["secretName"]
    folder.mkdir(parents=True)
    (spec,) = pod["containers"]
    named = next(e["value"] for e in spec["env"] if e["name"] == "RAGPLANE_GATEWAY_API_KEYS_FILE")
    keys_file = folder / Path(named).name
    key, _ = keys.create_key(keys_file, TENANT, keys.Role.ADMIN, name="container-suite")
    # A Secret volume is readable by the pod's group (fsGroup); here by user 10001.
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o755)
    return key


@pytest.fixture(scope="module")
async def container_stack(engine, images, tmp_path_factory) -> AsyncIterator[ContainerStack]:
    from testcontainers.core.network import Network

    folder = await asyncio.to_thread(converted_smollm2)
    models_dir = folder.parent
    deployments = rendered_deployments(folder.name)
    secrets = tmp_path_factory.mktemp("secrets")
    components = engine.version().get("Components") or []
    podman = any("podman" in c.get("Name", "").lower() for c in components)
    api_key = api_keys_secret(secrets, deployments)
    volume = f"ragplane-test-milvus-{uuid.uuid4().hex[:8]}"
    network = Network().create()
    started: list[Running] = []
    try:
        milvus = Running(
            "milvus",
            milvus_container(engines.image("retriever"), network, volume, podman),
            [MILVUS_PORT],
            MILVUS_START_S,
        )
        started.append(milvus)
        await asyncio.to_thread(milvus.container.start)
        await wait_ready(milvus, None)
        services: dict[str, Running] = {}
        grpc_ports: dict[str, int] = {}
        for service in engines.SERVICES:
            deployment = deployments[service]
            (spec,) = deployment["spec"]["template"]["spec"]["containers"]
            probe = spec["startupProbe"]
            grpc_ports[service] = probe["grpc"]["port"]
            services[service] = Running(
                service,
                container_of(
                    deployment, engines.image(service), network, models_dir, secrets, podman
                ),
                [p["containerPort"] for p in spec["ports"]],
                probe["periodSeconds"] * probe["failureThreshold"],
            )
        # The gateway reports SERVING only once the services behind it do.
        for group in (("embedder", "retriever", "generator"), ("gateway",)):
            for service in group:
                started.append(services[service])
                await asyncio.to_thread(services[service].container.start)
            await asyncio.gather(*(wait_ready(services[s], grpc_ports[s]) for s in group))
        (gateway_spec,) = deployments["gateway"]["spec"]["template"]["spec"]["containers"]
        http_port = next(p["containerPort"] for p in gateway_spec["ports"] if p["name"] == "http")
        yield ContainerStack(milvus, services, grpc_ports, http_port, api_key)
    finally:
        for running in reversed(started):
            await asyncio.to_thread(running.container.stop)
        await asyncio.to_thread(network.remove)
        await asyncio.to_thread(engine.volumes.get(volume).remove, force=True)


@pytest.fixture(scope="module")
async def handbook(container_stack) -> None:
    async with container_stack.client() as client:
        results = await cli.ingest(client, [CORPUS], collection=COLLECTION, out=io.StringIO())
    assert results and all(r.status != IngestStatus.FAILED for r in results)


async def stored(client: GrpcClient) -> dict[str, str]:
    """doc_id -> doc_hash of every document in the collection."""
    found: dict[str, str] = {}
    token = ""
    while True:
        page, token = await client.documents(COLLECTION, page_token=token, timeout=T)
        found.update((d.doc_id, d.doc_hash) for d in page)
        if not token:
            return found


async def test_every_service_serves_on_loopback_only(container_stack):
    for service, running in container_stack.services.items():
        assert await processes.serving(container_stack.address(service)), service
        bindings = running.container.get_wrapped_container().attrs["NetworkSettings"]["Ports"]
        for port in running.ports:
            assert {b["HostIp"] for b in bindings[f"{port}/tcp"]} == {"127.0.0.1"}, service
    async with container_stack.http() as client:
        listed = await client.models.list()
    assert listed.data is not None


async def test_ingested_documents_are_cited_over_grpc_and_http(container_stack, handbook):
    async with container_stack.client() as client:
        answer, citations, _ = await client.ask_text(QUESTION, collection=COLLECTION, timeout=T)
    assert answer.strip()
    assert DEPLOY in {c.doc_id for c in citations}
    async with container_stack.http() as http:
        completion = await http.chat.completions.create(
            model=COLLECTION, messages=[{"role": "user", "content": QUESTION}]
        )
    assert completion.choices[0].message.content.strip()
    assert DEPLOY in {c["doc_id"] for c in (completion.model_extra or {})["citations"]}


async def test_restarting_milvus_and_the_retriever_loses_nothing(container_stack, handbook):
    async with container_stack.client() as client:
        before = await client.describe_collection(COLLECTION)
        documents = await stored(client)
    await container_stack.restart(container_stack.milvus, None)
    retriever = container_stack.services["retriever"]
    await container_stack.restart(retriever, container_stack.grpc_ports["retriever"])
    # SERVING again once its channel to the new retriever is.
    await wait_ready(container_stack.services["gateway"], container_stack.grpc_ports["gateway"])
    async with container_stack.client() as client:
        # The gateway's breaker for the retriever may still wait out its retry hint.
        after = await _when_available(lambda: client.describe_collection(COLLECTION))
        assert await stored(client) == documents
        _, citations, _ = await client.ask_text(QUESTION, collection=COLLECTION, timeout=T)
    assert (after.chunk_count, after.document_count) == (before.chunk_count, before.document_count)
    assert DEPLOY in {c.doc_id for c in citations}


async def _when_available(call, within_s: float = 60.0):
    """call() once it stops answering UNAVAILABLE (a restarted dependency's circuit
    breaker lets a trial call through after its hint), within `within_s`."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within_s
    while True:
        try:
            return await call()
        except GatewayError as exc:
            if exc.code != "UNAVAILABLE" or loop.time() > until:
                raise
            await asyncio.sleep(1)
