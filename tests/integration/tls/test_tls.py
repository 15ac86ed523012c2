"""TLS end to end with generated certificates (trustme): the gateway's public gRPC and
HTTP ports serve TLS from certificate files and turn plaintext away; the gateway calls
the embedder over mutual TLS, which the embedder demands; the kubelet's plaintext health
port tells only health. Two real services: the embedder and the gateway."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragplane.channels import open_channel
from ragplane.client import GatewayError, GrpcClient, HttpClient
from ragplane.ops.processes import Process, serving, start_process
from tests.support import free_ports

SERVER_NAME = "ragplane.internal"  # the services' one certificate (RAGPLANE_TLS_SERVER_NAME)
T = 60  # deadline of every call, seconds


@dataclass
class Secured:
    gateway: str  # 127.0.0.1:port of the public gRPC port
    http: str  # https://127.0.0.1:port
    embedder: str
    embedder_health: str
    public_ca: Path


def write_pair(cert: trustme.LeafCert, folder: Path, name: str) -> tuple[Path, Path]:
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_file, key_file


def spawn(service: str, log: Path, env: dict[str, str]) -> Process:
    return start_process(
        [sys.executable, "-m", f"ragplane.{service}.server"],
        log,
        env={**os.environ, **env},
        name=service,
    )


async def answers_health(target: str, credentials: grpc.ChannelCredentials) -> bool:
    """Whether the gateway answers a health check over TLS (any status: its retriever
    and generator are not started, so it says NOT_SERVING)."""
    async with open_channel(target, credentials=credentials) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return True


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    folder = tmp_path_factory.mktemp("tls")
    public_ca, internal_ca = trustme.CA(), trustme.CA()
    public_ca.cert_pem.write_to_path(str(folder / "public-ca.crt"))
    internal_ca.cert_pem.write_to_path(str(folder / "internal-ca.crt"))
    gw_cert, gw_key = write_pair(public_ca.issue_cert("localhost", "127.0.0.1"), folder, "gw")
    svc_cert, svc_key = write_pair(internal_ca.issue_cert(SERVER_NAME), folder, "svc")
    grpc_port, http_port, gw_metrics, emb_port, emb_metrics, emb_health = free_ports(6)
    internal = {
        "RAGPLANE_TLS_CERT": str(svc_cert),
        "RAGPLANE_TLS_KEY": str(svc_key),
        "RAGPLANE_TLS_CA": str(folder / "internal-ca.crt"),
        "RAGPLANE_TLS_SERVER_NAME": SERVER_NAME,
        "RAGPLANE_STATE_DIR": str(folder / "state"),
    }
    embedder = spawn(
        "embedder",
        folder / "embedder.log",
        {
            **internal,
            "RAGPLANE_EMBEDDER_ADDR": f"127.0.0.1:{emb_port}",
            "RAGPLANE_EMBEDDER_METRICS_ADDR": f"127.0.0.1:{emb_metrics}",
            "RAGPLANE_HEALTH_ADDR": f"127.0.0.1:{emb_health}",
        },
    )
    gateway_env = {
        **internal,
        "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{grpc_port}",
        "RAGPLANE_GATEWAY_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{gw_metrics}",
        "RAGPLANE_GATEWAY_EMBEDDER_TARGET": f"127.0.0.1:{emb_port}",
        # API keys are another test's subject (docs/security.md).
        "RAGPLANE_GATEWAY_AUTH": "disabled",
        "RAGPLANE_GATEWAY_TLS_CERT": str(gw_cert),
        "RAGPLANE_GATEWAY_TLS_KEY": str(gw_key),
    }
    secured = Secured(
        gateway=f"127.0.0.1:{grpc_port}",
        http=f"https://127.0.0.1:{http_port}",
        embedder=f"127.0.0.1:{emb_port}",
        embedder_health=f"127.0.0.1:{emb_health}",
        public_ca=folder / "public-ca.crt",
    )
    trusted = grpc.ssl_channel_credentials(secured.public_ca.read_bytes())
    gateway: Process | None = None
    try:
        # The kubelet's way: plaintext gRPC health on the health port. The gateway starts
        # once the embedder serves, so that its first probe finds it up.
        await embedder.wait_until(lambda: serving(secured.embedder_health), within_s=300)
        gateway = spawn("gateway", folder / "gateway.log", gateway_env)
        await gateway.wait_until(lambda: answers_health(secured.gateway, trusted), within_s=60)
        yield secured
    finally:
        stopping = [asyncio.to_thread(embedder.stop)]
        if gateway is not None:
            stopping.append(asyncio.to_thread(gateway.stop))
        await asyncio.gather(*stopping)


def verifying(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_grpc_port_serves_tls_and_refuses_plaintext(secured):
    trusted = grpc.ssl_channel_credentials(secured.public_ca.read_bytes())
    assert await answers_health(secured.gateway, trusted)
    async with open_channel(secured.gateway) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(plaintext).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client trusting other CAs (the system's) does not accept the certificate.
    assert not await answers_health(secured.gateway, grpc.ssl_channel_credentials())


async def test_https_api_answers_through_mutual_tls_to_the_embedder(secured):
    """The OpenAI client over https, verifying the gateway's certificate against the
    generated CA; the gateway gets the vectors from the embedder over mutual TLS."""
    async with httpx.AsyncClient(verify=verifying(secured.public_ca)) as http:
        client = openai.AsyncOpenAI(
            base_url=f"{secured.http}/v1", api_key="unused", http_client=http, max_retries=0
        )
        reply = await client.embeddings.create(model="ragplane", input=["roll back a deploy"])
    assert len(reply.data) == 1 and len(reply.data[0].embedding) == 384


async def test_https_port_refuses_plaintext_and_unverified_clients(secured):
    plain = secured.http.replace("https://", "http://")
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{plain}/v1/models", timeout=T)
        # The system's CAs do not vouch for the generated certificate.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"{secured.http}/v1/models", timeout=T)


async def test_ragplane_clients_trust_the_ca_they_are_given(secured):
    """GrpcClient and HttpClient with `ca` reach the gateway (which then says its
    retriever is down: none runs here); without it the HTTP client reaches nothing."""
    for client in (
        GrpcClient(secured.gateway, ca=secured.public_ca),
        HttpClient(secured.http, ca=secured.public_ca),
    ):
        async with client:
            with pytest.raises(GatewayError) as err:
                await client.collections(timeout=T)
        assert not err.value.unreachable and err.value.code == "UNAVAILABLE", err.value
    async with HttpClient(secured.http) as unverified:
        with pytest.raises(GatewayError) as err:
            await unverified.collections(timeout=T)
    assert err.value.unreachable and "CERTIFICATE_VERIFY_FAILED" in err.value.message


async def test_embedder_demands_a_release_certificate_but_tells_health_to_anyone(secured):
    async with open_channel(secured.embedder) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(plaintext).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The public CA's clients are not the release's services either.
    public = grpc.ssl_channel_credentials(secured.public_ca.read_bytes())
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    async with grpc.aio.secure_channel(secured.embedder, public, options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The plaintext health port serves health alone: no Embed there.
    assert await serving(secured.embedder_health)
    async with open_channel(secured.embedder_health) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/ragplane.v1.EmbedderService/Embed")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_gateway_with_an_unreadable_certificate_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ragplane.gateway.server"],
        env={
            **os.environ,
            "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{free_ports(1)[0]}",
            "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_ports(1)[0]}",
            "RAGPLANE_GATEWAY_AUTH": "disabled",
            "RAGPLANE_GATEWAY_TLS_CERT": str(tmp_path / "missing.crt"),
            "RAGPLANE_GATEWAY_TLS_KEY": str(tmp_path / "missing.key"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "RAGPLANE_GATEWAY_TLS_CERT=" in result.stderr and "cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
