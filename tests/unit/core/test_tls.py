"""TLS from certificate files: bad files stop a service at start-up with a message naming
the variable, and the services' mutual TLS lets in only callers with a certificate of
the release's CA (a real handshake, certificates made by trustme)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragplane import tls
from ragplane.channels import open_channel
from ragplane.errors import ConfigError
from ragplane.ops.processes import free_port

SERVER_NAME = "ragplane.internal"


def write_pair(cert: trustme.LeafCert, folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_file, key_file


@pytest.fixture
def internal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """RAGPLANE_TLS_* of a release whose services share one certificate for SERVER_NAME."""
    ca = trustme.CA()
    cert, key = write_pair(ca.issue_cert(SERVER_NAME), tmp_path, "service")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    monkeypatch.setenv("RAGPLANE_TLS_CERT", str(cert))
    monkeypatch.setenv("RAGPLANE_TLS_KEY", str(key))
    monkeypatch.setenv("RAGPLANE_TLS_CA", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("RAGPLANE_TLS_SERVER_NAME", SERVER_NAME)
    return ca


def test_nothing_configured_means_plaintext(monkeypatch):
    for name in (
        "RAGPLANE_GATEWAY_TLS_CERT",
        "RAGPLANE_GATEWAY_TLS_KEY",
        "RAGPLANE_TLS_CERT",
        "RAGPLANE_TLS_CA",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tls.public_tls() is None and tls.internal_tls() is None


def test_a_certificate_without_its_key_is_refused(tmp_path, monkeypatch):
    cert, _ = write_pair(trustme.CA().issue_cert("localhost"), tmp_path, "gw")
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_CERT", str(cert))
    monkeypatch.delenv("RAGPLANE_GATEWAY_TLS_KEY", raising=False)
    with pytest.raises(ConfigError, match="RAGPLANE_GATEWAY_TLS_KEY go together"):
        tls.public_tls()


def test_a_missing_file_names_the_variable_and_the_path(tmp_path, monkeypatch):
    cert, key = write_pair(trustme.CA().issue_cert("localhost"), tmp_path, "gw")
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_CERT", str(cert))
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_KEY", str(tmp_path / "nowhere.key"))
    with pytest.raises(ConfigError, match=r"RAGPLANE_GATEWAY_TLS_KEY=.*nowhere.key cannot be read"):
        tls.public_tls()


def test_a_key_of_another_certificate_is_refused(tmp_path, monkeypatch):
    ca = trustme.CA()
    cert, _ = write_pair(ca.issue_cert("localhost"), tmp_path, "one")
    _, other_key = write_pair(ca.issue_cert("localhost"), tmp_path, "two")
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_CERT", str(cert))
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_KEY", str(other_key))
    with pytest.raises(ConfigError, match="not a PEM certificate and its private key"):
        tls.public_tls()


def test_a_client_ca_that_is_no_certificate_is_refused(tmp_path, monkeypatch):
    cert, key = write_pair(trustme.CA().issue_cert("localhost"), tmp_path, "gw")
    (tmp_path / "junk.pem").write_text("not a certificate")
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_CERT", str(cert))
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_KEY", str(key))
    monkeypatch.setenv("RAGPLANE_GATEWAY_TLS_CLIENT_CA", str(tmp_path / "junk.pem"))
    with pytest.raises(ConfigError, match="RAGPLANE_GATEWAY_TLS_CLIENT_CA=.* holds no PEM CA"):
        tls.public_tls()


def test_mutual_tls_needs_all_three_files(internal, monkeypatch):
    monkeypatch.delenv("RAGPLANE_TLS_CA")
    with pytest.raises(ConfigError, match="needs all of RAGPLANE_TLS_CERT, RAGPLANE_TLS_KEY"):
        tls.internal_tls()


async def health_over(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def test_services_talk_mutual_tls_and_refuse_callers_without_a_release_certificate(
    internal, tmp_path
):
    settings = tls.internal_tls()
    assert settings is not None
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    server.add_secure_port(f"127.0.0.1:{port}", settings.server_credentials())
    await server.start()
    target = f"127.0.0.1:{port}"
    try:
        # A service's channel (service=...) carries the release's certificate.
        async with open_channel(target, service="embedder") as channel:
            assert await health_over(channel) == health_pb2.HealthCheckResponse.SERVING
        # TLS that trusts the server but shows no client certificate: refused.
        anonymous = grpc.ssl_channel_credentials(root_certificates=settings.ca)
        options = settings.channel_options()
        async with grpc.aio.secure_channel(target, anonymous, options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await health_over(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate of another CA: refused too.
        stranger = trustme.CA()
        cert, key = write_pair(stranger.issue_cert(SERVER_NAME), tmp_path / "x", "stranger")
        other = grpc.ssl_channel_credentials(settings.ca, key.read_bytes(), cert.read_bytes())
        async with grpc.aio.secure_channel(target, other, options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await health_over(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # And plaintext.
        async with open_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await health_over(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
