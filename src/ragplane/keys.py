"""API keys as the gateway checks them and the CLI manages them: the key format, the keys
file (JSON, hashes only), and the local stack's first key.

A key is `rpk_<id>_<secret>`: the id finds the record, the secret is compared with its
salted SHA-256 (hashlib, hmac.compare_digest). The secret is 32 random bytes from
`secrets`, so a slow password KDF would add ~50 ms per call and no protection: nobody
guesses 256 random bits (docs/security.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

KEY_PREFIX = "rpk_"
# Tenant ids have no underscore, so `<tenant>__<name>` splits at its first "__".
TENANT_ID = re.compile(r"^[a-z][a-z0-9]{0,31}$")
KEY_ID = re.compile(r"^[a-z0-9]{12}$")
LOCAL_TENANT = "local"
KEYS_FILE = "keys.json"
API_KEY_FILE = "api-key"
API_KEY_ENV = "RAGPLANE_API_KEY"


class Role(IntEnum):
    """What a key may do; each role may do what the ones below it may."""

    READER = 1  # ask, search, list and read collections and documents
    WRITER = 2  # also ingest, update and delete documents, jobs
    ADMIN = 3  # also create and drop collections

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"role {name!r} is not one of {', '.join(r.name.lower() for r in cls)}"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class KeyRecord:
    """One key as the keys file stores it: never the secret, only its salted hash."""

    id: str
    tenant: str
    role: str
    salt: str
    hash: str
    created: str
    revoked: str | None = None
    name: str = ""

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(hash_secret(self.salt, secret), self.hash)


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not KEY_ID.match(key_id) or not secret:
        return None
    return key_id, secret


def valid_tenant(tenant: str) -> str:
    if not TENANT_ID.match(tenant):
        raise ValueError(
            f"tenant {tenant!r} is not a valid id (a lowercase letter, then up to 31 "
            "lowercase letters or digits)"
        )
    return tenant


def new_key(tenant: str, role: Role, name: str = "") -> tuple[str, KeyRecord]:
    """A fresh key and its record; the key is shown once and never stored."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    record = KeyRecord(
        id=key_id,
        tenant=valid_tenant(tenant),
        role=role.label,
        salt=salt,
        hash=hash_secret(salt, secret),
        created=_now(),
        name=name,
    )
    return f"{KEY_PREFIX}{key_id}_{secret}", record


def read_keys(path: Path) -> list[KeyRecord]:
    """The keys file's records; ValueError naming the file when it is not one."""
    try:
        document = json.loads(path.read_text())
        records = [KeyRecord(**entry) for entry in document["keys"]]
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a ragplane keys file: {exc}") from None
    for r in records:
        valid_tenant(r.tenant)
        Role.parse(r.role)
        if not KEY_ID.match(r.id):
            raise ValueError(f"{path}: key id {r.id!r} is not valid")
    return records


def write_keys(path: Path, records: list[KeyRecord]) -> None:
    """Replaces the file atomically, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"keys": [asdict(r) for r in records]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serializes writers of one keys file (two CLI calls at once lose no key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create_key(path: Path, tenant: str, role: Role, name: str = "") -> tuple[str, KeyRecord]:
    """Adds a key to the file (created if missing); returns the key and its record."""
    with _locked(path):
        records = read_keys(path) if path.exists() else []
        key, record = new_key(tenant, role, name)
        write_keys(path, [*records, record])
    return key, record


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    """Marks a key revoked (kept, so the audit log's key ids stay explainable)."""
    with _locked(path):
        records = read_keys(path)
        for i, r in enumerate(records):
            if r.id == key_id:
                if r.revoked is None:
                    records[i] = replace(r, revoked=_now())
                    write_keys(path, records)
                return records[i]
    raise KeyError(key_id)


def ensure_local_key(state_dir: Path) -> Path | None:
    """`ragplane up`'s first key: with no keys file in the state dir, one with an admin key
    for the local tenant, the key itself in <state>/api-key (both 0600). Returns the key
    file written, or None when a keys file was there."""
    keys_file = state_dir / KEYS_FILE
    if keys_file.exists():
        return None
    key, _ = create_key(keys_file, LOCAL_TENANT, Role.ADMIN, name="ragplane up")
    api_key = state_dir / API_KEY_FILE
    fd = os.open(api_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(api_key, 0o600)
    return api_key


def read_api_key(state_dir: Path) -> str | None:
    """The key `ragplane up` wrote to the state dir, if any."""
    try:
        return (state_dir / API_KEY_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
