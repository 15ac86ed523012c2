"""The container engine, once per session, for the image and container tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy import engine as engines


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Docker SDK client of the engine (podman's API, started for the session)."""
    previous = os.environ.get("DOCKER_HOST")
    with engines.docker_host(tmp_path_factory.mktemp("engine")) as host:
        engines.configure_testcontainers(host)
        import docker  # after DOCKER_HOST is set: testcontainers reads it on import too

        client = docker.DockerClient(base_url=host)
        try:
            client.ping()
        except docker.errors.DockerException as exc:
            pytest.skip(f"the container engine at {host} does not answer: {exc}")
        try:
            yield client
        finally:
            client.close()
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous


@pytest.fixture(scope="session")
def images(engine: Any) -> dict[str, Any]:
    """service -> its image, all four built."""
    import docker

    found, absent = {}, []
    for service in engines.SERVICES:
        try:
            found[service] = engine.images.get(engines.image(service))
        except docker.errors.ImageNotFound:
            absent.append(engines.image(service))
    if absent:
        engines.missing_images(f"images not built: {', '.join(absent)}")
    return found
