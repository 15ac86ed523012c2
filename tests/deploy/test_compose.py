"""compose.yaml runs the images .ci/build-images builds the way the chart runs them:
unprivileged, read-only, only the gateway published and only on loopback, and every
RAGPLANE_* variable it sets is one the code reads. (No Compose runs here: the container
suite, test_containers.py, runs the same images.)"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy import engine as engines
from tests.deploy.test_chart import variables_the_code_reads
from tests.support import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
DEFAULTS = re.compile(r"\$\{(\w+):-([^}]*)\}")


def expanded(value: str) -> str:
    """${NAME:-default} as Compose expands it with NAME unset."""
    return DEFAULTS.sub(lambda m: m.group(2), value)


def test_compose_runs_every_service_from_its_image():
    images = {name: expanded(s["image"]) for name, s in COMPOSE.items()}
    assert {n: images[n] for n in engines.SERVICES} == {
        n: engines.image(n) for n in engines.SERVICES
    }
    assert images["milvus"] == engines.image("retriever")
    for name in engines.SERVICES:
        assert COMPOSE[name]["command"] == [f"ragplane-{name}"]


@pytest.mark.parametrize("name", sorted(COMPOSE))
def test_compose_services_run_unprivileged_on_a_read_only_root(name):
    service = COMPOSE[name]
    assert service["user"] == "10001:10001" and service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    published = service.get("ports", [])
    assert all(p.startswith("127.0.0.1:") for p in published)
    assert bool(published) == (name == "gateway")


def test_compose_sets_only_variables_the_code_reads():
    patterns = variables_the_code_reads()
    for name in engines.SERVICES:
        for variable in COMPOSE[name]["environment"]:
            if variable.startswith("RAGPLANE_"):
                assert any(p.fullmatch(variable) for p in patterns), (name, variable)
