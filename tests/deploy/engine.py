"""The container engine and the service images that tests/deploy/test_images.py and
test_containers.py run: podman, whose Docker-compatible API is started here on a socket
of its own (or whatever engine DOCKER_HOST already names), and the images
.ci/build-images builds.

No engine: the tests skip, saying so. An engine but no images: they skip locally and fail
in CI (CI set), where .ci/run builds the images first."""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from ragplane.ops.processes import start_process
from tests.support import ROOT

SERVICES = ("embedder", "retriever", "generator", "gateway")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Where .ci/build-images tags them; another registry's copies by RAGPLANE_IMAGE_PREFIX.
IMAGE_PREFIX = os.environ.get("RAGPLANE_IMAGE_PREFIX", "localhost/ragplane-")
SOCKET_WAIT_S = 30.0


def image(service: str) -> str:
    return f"{IMAGE_PREFIX}{service}:{VERSION}"


def missing_images(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run builds them with .ci/build-images")
    pytest.skip(f"{reason} (build them with .ci/build-images)")


@contextmanager
def docker_host(workdir: Path) -> Iterator[str]:
    """DOCKER_HOST of a Docker-compatible engine API: the one the environment names, or
    podman's, served from `workdir` for as long as the context lasts. Skips without either."""
    given = os.environ.get("DOCKER_HOST")
    if given:
        yield given
        return
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip(
            "no container engine: podman is not installed and DOCKER_HOST is not set "
            "(.ci/build-images installs podman and builds the images)"
        )
    socket = workdir / "podman.sock"
    service = start_process(
        [podman, "system", "service", "--time=0", f"unix://{socket}"],
        workdir / "podman-service.log",
        name="podman system service",
    )
    try:
        deadline = time.monotonic() + SOCKET_WAIT_S
        while not socket.exists():
            if not service.alive() or time.monotonic() > deadline:
                pytest.skip(f"podman's API did not start:\n{service.tail()}")
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.stop()


def configure_testcontainers(host: str) -> None:
    """What testcontainers reads when it is imported: the engine, no Ryuk (its image
    cannot be pulled here; the fixtures remove what they start), and ports mapped on the
    engine's host (it takes this machine for a container otherwise)."""
    os.environ["DOCKER_HOST"] = host
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
