"""Fixtures of the resilience suite: the handbook indexed in a collection of its own on
the session stack."""

from __future__ import annotations

import io

import pytest

from ragplane.client import GrpcClient
from ragplane.ops import cli
from tests.support import ROOT

CORPUS = ROOT / "samples" / "handbook"
COLLECTION = "resilience"


@pytest.fixture(scope="session")
async def resilience_collection(channels) -> str:
    """samples/handbook in the `resilience` collection of the session stack."""
    await cli.ingest(GrpcClient(channels["gateway"]), [CORPUS], COLLECTION, out=io.StringIO())
    return COLLECTION
