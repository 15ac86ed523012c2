"""tools/image_requirements.py: what each service image installs before its sources."""

from __future__ import annotations

import tomllib

from tests.support import ROOT
from tools.image_requirements import requirements

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(extra: str) -> set[str]:
    return {
        r.split(">")[0].split("=")[0].split("<")[0].split("[")[0]
        for r in requirements(PROJECT, [extra])
    }


def test_every_image_gets_the_core():
    for extra in ("gateway", "retriever", "embedder", "generator"):
        assert set(PROJECT["dependencies"]) <= set(requirements(PROJECT, [extra]))


def test_gateway_and_retriever_images_get_no_torch():
    for extra in ("gateway", "retriever"):
        assert not names(extra) & {"torch", "vllm", "transformers", "sentence-transformers"}


def test_an_extra_naming_another_gets_both():
    reranker = names("reranker")
    assert {"pymilvus", "milvus-lite", "torch"} <= reranker
    assert not any(r.startswith("ragplane") for r in requirements(PROJECT, ["all"]))
