"""The four service images (.ci/build-images, Dockerfile): each holds only what its
service needs, runs that service unprivileged, and stays within its size. Sizes as built
here are in docs/deploy.md; the limits leave room for patch releases of the
dependencies, not for a stray torch."""

from __future__ import annotations

import json

import pytest

from tests.deploy import engine as engines

MB = 1_000_000
# The gateway and the retriever carry no torch (a 0.8 GB wheel) and no vLLM; the
# retriever's size is mostly pymilvus' pandas and pyarrow (~250 MB).
SIZE_LIMITS_MB = {"gateway": 400, "retriever": 800, "embedder": 2_000, "generator": 6_000}
HEAVY = ("torch", "vllm", "transformers", "sentence_transformers")
NEEDS = {
    "gateway": set(),
    "retriever": set(),
    "embedder": {"torch", "transformers", "sentence_transformers"},
    "generator": {"torch", "vllm", "transformers"},
}
# What a container of the image reports about itself.
PROBE = (
    "import importlib.util, json, os, sys;"
    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(),"
    " 'service': os.path.basename(os.path.realpath(sys.prefix + '/bin/ragplane-service')),"
    f" 'heavy': [m for m in {HEAVY!r} if importlib.util.find_spec(m)]}}))"
)


@pytest.fixture(scope="module")
def probes(engine, images) -> dict[str, dict]:
    """service -> what a container of its image (read-only root, no capabilities) says."""
    found = {}
    for service, image in images.items():
        output = engine.containers.run(
            image.id,
            ["python", "-c", PROBE],
            remove=True,
            read_only=True,
            cap_drop=["ALL"],
            network_mode="none",
        )
        found[service] = json.loads(output)
    return found


@pytest.mark.parametrize("service", engines.SERVICES)
def test_image_holds_only_what_its_service_needs(probes, service):
    assert set(probes[service]["heavy"]) == NEEDS[service]


@pytest.mark.parametrize("service", engines.SERVICES)
def test_image_runs_its_own_service_as_the_unprivileged_user(images, probes, service):
    assert probes[service]["service"] == f"ragplane-{service}"
    assert (probes[service]["uid"], probes[service]["gid"]) == (10001, 10001)
    assert images[service].attrs["Config"]["Cmd"] == ["ragplane-service"]


@pytest.mark.parametrize("service", engines.SERVICES)
def test_image_stays_within_its_size(images, service):
    size_mb = images[service].attrs["Size"] / MB
    assert size_mb < SIZE_LIMITS_MB[service], f"{engines.image(service)}: {size_mb:.0f} MB"
