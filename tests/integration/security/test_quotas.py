"""Quotas on a second gateway beside the session stack's (same services, same keys file),
started with small limits: a key over its rate, a key with a stream open past its limit,
and a tenant past its storage are refused with RESOURCE_EXHAUSTED / 429 and a retry
hint, and counted by tenant in the gateway's metrics."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from ragplane import keys
from ragplane.client import api_key_metadata
from ragplane.keys import Role
from ragplane.ops import processes, stack
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.security.conftest import T, wait_until_accepted

HANDBOOK = (
    b"# Gamma runbook\n\nTo restart the gamma queue, run `gq restart` and wait for the "
    b"green light on the gamma dashboard.\n"
)
# Calls made at once by the rate tests: 3 saved up, one more earned every 2 s.
AT_ONCE = 12


@dataclass(frozen=True)
class QuotaGateway:
    address: str
    http: str
    metrics: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def quota_gateway(running_stack: stack.StackLayout, tmp_path_factory) -> AsyncIterator:
    grpc_port, http_port, metrics_port = processes.free_ports(3)
    env = running_stack.service_env(
        {
            "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{grpc_port}",
            "RAGPLANE_GATEWAY_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND": "0.5",
            "RAGPLANE_GATEWAY_KEY_BURST": "3",
            "RAGPLANE_GATEWAY_KEY_MAX_STREAMS": "1",
            "RAGPLANE_GATEWAY_TENANT_MAX_CHUNKS": "3",
        }
    )
    made = {
        use: keys.create_key(running_stack.keys_file, "gamma", role, f"quota {use}")[0]
        for use, role in (
            ("rate", Role.READER),
            ("http", Role.READER),
            ("stream", Role.READER),
            ("storage", Role.WRITER),
            ("sentinel", Role.READER),
        )
    }
    log = tmp_path_factory.mktemp("quota") / "gateway.log"
    proc = processes.start_process(
        [sys.executable, "-m", "ragplane.gateway.server"], log, env=env, name="quota gateway"
    )
    try:
        address = f"127.0.0.1:{grpc_port}"
        await proc.wait_serving(address, within_s=120)
        await wait_until_accepted(address, made.pop("sentinel"))
        yield QuotaGateway(
            address, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics_port}", made
        )
    finally:
        await asyncio.to_thread(proc.stop, 30)


def retry_after(exc: grpc.aio.AioRpcError) -> float:
    hints = [float(v) for k, v in exc.trailing_metadata() or () if k == "retry-after"]
    assert hints, exc.trailing_metadata()
    return hints[0]


async def test_a_key_over_its_rate_is_told_when_to_retry(quota_gateway):
    async with grpc.aio.insecure_channel(quota_gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = api_key_metadata(quota_gateway.keys["rate"])
        # Burst 3 at 0.5 a second, 12 calls at once: the key is admitted or refused as a
        # call arrives, however long the answers take, so most of them are refused.
        outcomes = await asyncio.gather(
            *(
                stub.ListCollections(
                    gateway_pb2.GatewayServiceListCollectionsRequest(),
                    metadata=metadata,
                    timeout=T,
                )
                for _ in range(AT_ONCE)
            ),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) >= AT_ONCE // 2, outcomes
    for exc in refused:
        assert isinstance(exc, grpc.aio.AioRpcError), exc
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        assert "rate" in (exc.details() or "")
        assert retry_after(exc) >= 1


async def test_a_key_over_its_rate_gets_429_with_retry_after_over_http(quota_gateway):
    headers = {"authorization": f"Bearer {quota_gateway.keys['http']}"}
    async with httpx.AsyncClient(base_url=quota_gateway.http, timeout=T) as client:
        replies = await asyncio.gather(
            *(client.get("/v1/collections", headers=headers) for _ in range(AT_ONCE))
        )
    refused = [r for r in replies if r.status_code != 200]
    assert len(refused) >= AT_ONCE // 2, [r.text for r in replies]
    for reply in refused:
        assert reply.status_code == 429, reply.text
        assert reply.json()["error"]["type"] == "rate_limit_error"
        assert int(reply.headers["retry-after"]) >= 1


async def test_a_tenant_past_its_storage_is_refused_and_keeps_what_it_has(quota_gateway):
    async with grpc.aio.insecure_channel(quota_gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = api_key_metadata(quota_gateway.keys["storage"])
        small = gateway_pb2.Document(doc_id="gamma.md", content=HANDBOOK)
        reply = await stub.Ingest(
            gateway_pb2.IngestRequest(collection="docs", documents=[small]),
            metadata=metadata,
            timeout=T,
        )
        assert reply.results[0].status == gateway_pb2.INGEST_STATUS_WRITTEN, reply
        sections = b"".join(
            b"## Step %d\n\n%s\n\n" % (i, b"Words about the gamma queue. " * 60) for i in range(8)
        )
        large = gateway_pb2.Document(doc_id="large.md", content=b"# Large\n\n" + sections)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Ingest(
                gateway_pb2.IngestRequest(collection="docs", documents=[large]),
                metadata=metadata,
                timeout=T,
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 3" in (refused.value.details() or "")
        assert retry_after(refused.value) >= 1
        listed = await stub.ListDocuments(
            gateway_pb2.GatewayServiceListDocumentsRequest(collection="docs"),
            metadata=metadata,
            timeout=T,
        )
        assert [d.doc_id for d in listed.documents] == ["gamma.md"]


async def test_a_second_stream_past_the_key_s_limit_is_refused(quota_gateway):
    # "docs": the collection the storage test wrote (the tests run in file order).
    async with grpc.aio.insecure_channel(quota_gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = api_key_metadata(quota_gateway.keys["stream"])
        request = gateway_pb2.AskRequest(
            question="How do I restart the gamma queue?", collection="docs", max_tokens=64
        )
        first = stub.Ask(request, metadata=metadata, timeout=T)
        await first.read()  # the first event: the stream is open, its slot held
        second = stub.Ask(request, metadata=metadata, timeout=T)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        while await first.read() != grpc.aio.EOF:  # one style of reading per call
            pass
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after(refused.value) >= 1


async def test_refusals_are_counted_by_tenant(quota_gateway):
    async with httpx.AsyncClient(timeout=T) as client:
        text = (await client.get(f"{quota_gateway.metrics}/metrics")).text
    for quota in ("rate", "storage", "streams"):
        line = next(
            (
                line
                for line in text.splitlines()
                if line.startswith("ragplane_gateway_quota_refusals_total{")
                and f'quota="{quota}"' in line
                and 'tenant="gamma"' in line
            ),
            None,
        )
        assert line is not None and float(line.rsplit(" ", 1)[1]) >= 1, quota
