"""TLS from PEM certificate files: the gateway's public ports (RAGPLANE_GATEWAY_TLS_*) and
the optional mutual TLS between the services (RAGPLANE_TLS_*).

Files are read once, at start-up, and checked there (readable, PEM, key matching the
certificate) so that a bad mount fails with a message naming the variable, not with a
handshake error on the first call. A renewed certificate takes effect on restart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ragplane.config import env_str
from ragplane.errors import ConfigError


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, as files and as their PEM bytes."""

    cert_file: Path
    key_file: Path
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class ServerTls:
    """TLS of a public port; with client_ca, clients must show a certificate it signed."""

    pair: KeyPair
    client_ca_file: Path | None = None
    client_ca: bytes | None = None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.pair.key, self.pair.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config's TLS settings (it reads the files itself)."""
        options: dict[str, Any] = {
            "ssl_certfile": str(self.pair.cert_file),
            "ssl_keyfile": str(self.pair.key_file),
        }
        if self.client_ca_file is not None:
            options |= {
                "ssl_ca_certs": str(self.client_ca_file),
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
            }
        return options


@dataclass(frozen=True)
class InternalTls:
    """Mutual TLS between the services: each serves with its certificate and demands one
    signed by `ca` from its callers, and calls with the same certificate. With
    `server_name`, callers check the certificate against that name instead of the host
    they call: one certificate for every service of a release, whatever its DNS names."""

    pair: KeyPair
    ca: bytes
    server_name: str = ""

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.pair.key, self.pair.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.pair.key, certificate_chain=self.pair.cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def public_tls() -> ServerTls | None:
    """The gateway's public TLS (gRPC and HTTP ports), or None when not configured."""
    pair = _key_pair(
        _Setting("RAGPLANE_GATEWAY_TLS_CERT", env_str("RAGPLANE_GATEWAY_TLS_CERT", "")),
        _Setting("RAGPLANE_GATEWAY_TLS_KEY", env_str("RAGPLANE_GATEWAY_TLS_KEY", "")),
    )
    client_ca = _Setting(
        "RAGPLANE_GATEWAY_TLS_CLIENT_CA", env_str("RAGPLANE_GATEWAY_TLS_CLIENT_CA", "")
    )
    if pair is None:
        if client_ca.value:
            raise ConfigError(
                "RAGPLANE_GATEWAY_TLS_CLIENT_CA needs RAGPLANE_GATEWAY_TLS_CERT and "
                "RAGPLANE_GATEWAY_TLS_KEY"
            )
        return None
    if not client_ca.value:
        return ServerTls(pair)
    return ServerTls(pair, client_ca.path, _ca(client_ca))


def internal_tls() -> InternalTls | None:
    """Mutual TLS between services, or None (plaintext) when RAGPLANE_TLS_* are unset."""
    pair = _key_pair(
        _Setting("RAGPLANE_TLS_CERT", env_str("RAGPLANE_TLS_CERT", "")),
        _Setting("RAGPLANE_TLS_KEY", env_str("RAGPLANE_TLS_KEY", "")),
    )
    ca = _Setting("RAGPLANE_TLS_CA", env_str("RAGPLANE_TLS_CA", ""))
    if pair is None and not ca.value:
        return None
    if pair is None or not ca.value:
        raise ConfigError(
            "mutual TLS between services needs all of RAGPLANE_TLS_CERT, RAGPLANE_TLS_KEY "
            "and RAGPLANE_TLS_CA"
        )
    return InternalTls(pair, _ca(ca), env_str("RAGPLANE_TLS_SERVER_NAME", ""))


@dataclass(frozen=True)
class _Setting:
    """A variable naming a file, and its value ("" when unset)."""

    name: str
    value: str

    @property
    def path(self) -> Path:
        return Path(self.value)

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{self.name}={self.value} cannot be read: {exc.strerror or exc}"
            ) from None


def _key_pair(cert: _Setting, key: _Setting) -> KeyPair | None:
    if not cert.value and not key.value:
        return None
    if not cert.value or not key.value:
        raise ConfigError(f"{cert.name} and {key.name} go together: set both or neither")
    cert_pem, key_pem = cert.read(), key.read()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert.path, key.path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{cert.name}={cert.value} and {key.name}={key.value} are not a PEM certificate "
            f"and its private key: {exc.reason or exc}"
        ) from None
    return KeyPair(cert.path, key.path, cert_pem, key_pem)


def _ca(setting: _Setting) -> bytes:
    """The PEM bytes of a CA certificate file, checked."""
    pem = setting.read()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"{setting.name}={setting.value} holds no PEM CA certificate: {exc}"
        ) from None
    return pem
