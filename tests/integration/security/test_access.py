"""Every public RPC (from the proto's descriptor) and every HTTP route (from the FastAPI
router) refuses a missing, malformed, unknown or revoked key with UNAUTHENTICATED / 401
and the same words, and a role below its own with PERMISSION_DENIED / 403; health,
reflection and metrics stay open; writes leave an audit line."""

from __future__ import annotations

import json
import re

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragplane.client import api_key_metadata
from ragplane.gateway import auth
from ragplane.gateway.http.router import router
from ragplane.keys import Role
from ragplane.ops import stack
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.security.conftest import Keyring, T

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
ROUTES = [
    (method, route.path, route.name)  # type: ignore[attr-defined]
    for route in router.routes
    for method in sorted(route.methods)  # type: ignore[attr-defined]
]
UNKNOWN = "rpk_zzzzzzzzzzzz_" + "x" * 43


def bad_keys(keyring: Keyring) -> dict[str, str | None]:
    """The credentials that must all read as no valid key."""
    alpha = keyring.key("alpha", Role.ADMIN)
    return {
        "missing": None,
        "not bearer": f"Basic {alpha}",
        "malformed": "Bearer not-a-key",
        "unknown": f"Bearer {UNKNOWN}",
        "wrong secret": f"Bearer {alpha[:-4]}abcd",
        "revoked": f"Bearer {keyring.revoked}",
    }


async def raw_call(
    channel: grpc.aio.Channel, method: str, authorization: str | None
) -> tuple[grpc.StatusCode, str]:
    """An empty request message of `method` with this authorization; its status."""
    rpc = GATEWAY.methods_by_name[method]
    path = f"/{GATEWAY.full_name}/{method}"
    metadata = (("authorization", authorization),) if authorization is not None else None
    try:
        if rpc.server_streaming:
            async for _ in channel.unary_stream(path)(b"", metadata=metadata, timeout=T):
                pass
        else:
            await channel.unary_unary(path)(b"", metadata=metadata, timeout=T)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
async def raw_channel(running_stack: stack.StackLayout):
    async with grpc.aio.insecure_channel(running_stack.address("gateway")) as channel:
        yield channel


@pytest.mark.parametrize("method", [m.name for m in GATEWAY.methods])
async def test_every_rpc_refuses_a_missing_or_bad_key(raw_channel, keyring, method):
    for case, authorization in bad_keys(keyring).items():
        code, details = await raw_call(raw_channel, method, authorization)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (method, case, code, details)
        assert details in (auth.MISSING, auth.INVALID), (method, case, details)


@pytest.mark.parametrize("method", [m.name for m in GATEWAY.methods])
async def test_every_rpc_refuses_a_role_below_its_own(raw_channel, keyring, method):
    needed = auth.GRPC_ROLES[method]
    for role in Role:
        code, details = await raw_call(raw_channel, method, f"Bearer {keyring.key('alpha', role)}")
        if role < needed:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method, role, code, details)
        else:
            # Admitted: whatever the empty request gets next, it is not a refusal of the key.
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ), (method, role, code, details)


def url_of(template: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", "secx", template)


async def http_call(
    base: str, method: str, template: str, authorization: str | None
) -> httpx.Response:
    headers = {"authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=base, timeout=T) as client:
        return await client.request(method, url_of(template), headers=headers, json={})


@pytest.mark.parametrize(("method", "template", "name"), ROUTES)
async def test_every_route_refuses_a_missing_or_bad_key(
    running_stack, keyring, method, template, name
):
    base = f"http://{running_stack.http_address()}"
    for case, authorization in bad_keys(keyring).items():
        reply = await http_call(base, method, template, authorization)
        assert reply.status_code == 401, (method, template, case, reply.text)
        error = reply.json()["error"]
        assert error["type"] == "authentication_error"
        assert error["message"] in (auth.MISSING, auth.INVALID)


@pytest.mark.parametrize(("method", "template", "name"), ROUTES)
async def test_every_route_refuses_a_role_below_its_own(
    running_stack, keyring, method, template, name
):
    base = f"http://{running_stack.http_address()}"
    needed = auth.HTTP_ROLES[name]
    for role in Role:
        reply = await http_call(base, method, template, f"Bearer {keyring.key('alpha', role)}")
        if role < needed:
            assert reply.status_code == 403, (method, template, role, reply.text)
            assert reply.json()["error"]["type"] == "permission_error"
        else:
            assert reply.status_code not in (401, 403), (method, template, role, reply.text)


async def test_health_reflection_and_metrics_need_no_key(running_stack):
    async with grpc.aio.insecure_channel(running_stack.address("gateway")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=T)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflection.ServerReflectionInfo(iter([request]), timeout=T):
            names = {s.name for s in answer.list_services_response.service}
            assert GATEWAY.full_name in names
            break
    port = running_stack.metrics_ports["gateway"]
    async with httpx.AsyncClient(timeout=T) as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'ragplane_gateway_auth_refusals_total{reason="missing"}' in metrics


async def test_a_write_leaves_an_audit_line_with_who_what_and_the_result(running_stack, keyring):
    key = keyring.key("alpha", Role.WRITER)
    async with grpc.aio.insecure_channel(running_stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DeleteDocument(
                gateway_pb2.GatewayServiceDeleteDocumentRequest(
                    collection="audited", doc_id="absent.md"
                ),
                metadata=api_key_metadata(key),
                timeout=T,
            )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    key_id = keyring.key_ids[("alpha", Role.WRITER)]
    lines = [
        json.loads(json.loads(line)["message"])
        for line in running_stack.log_file("gateway").read_text().splitlines()
        if '"logger": "ragplane.audit"' in line
    ]
    mine = [e for e in lines if e["key_id"] == key_id and e["action"] == "DeleteDocument"]
    assert mine, lines[-5:]
    assert mine[-1]["tenant"] == "alpha" and mine[-1]["result"] == "NOT_FOUND"
    assert mine[-1]["target"] == {"collection": "audited", "doc_id": "absent.md"}
    assert key not in running_stack.log_file("gateway").read_text()
