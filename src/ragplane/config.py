"""Typed settings from environment variables, validated at start-up.

Each service declares one frozen dataclass and builds it with these readers; a bad
value fails fast with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ragplane.errors import ConfigError

T = TypeVar("T")

# Loopback ports of the one-machine stack.
DEFAULT_PORTS = {
    "gateway": 50050,
    "embedder": 50051,
    "retriever": 50052,
    "generator": 50053,
    "milvus": 19530,
}


def _read(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def env_str(name: str, default: str) -> str:
    return _read(name, default, str)


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _read(name, default, int)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above the maximum {maximum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    value = _read(name, default, float)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    def parse(raw: str) -> bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")

    return _read(name, default, parse)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def state_dir() -> Path:
    """Where models, Milvus data, logs and pid files live: RAGPLANE_STATE_DIR, else
    $XDG_STATE_HOME/ragplane, else ~/.local/state/ragplane. Never the working directory,
    so that `ragplane` commands find the same stack from anywhere."""
    xdg = env_str("XDG_STATE_HOME", "") or str(Path.home() / ".local" / "state")
    path = Path(env_str("RAGPLANE_STATE_DIR", str(Path(xdg) / "ragplane"))).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def listen_address(service: str) -> str:
    """host:port a service listens on: RAGPLANE_<SERVICE>_ADDR, else loopback default."""
    return env_str(f"RAGPLANE_{service.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")
