"""Keys for the security tests, added to the session stack's keys file as an operator
would with `ragplane keys create`: tenants alpha and beta with a key of each role, and a
revoked key. The gateway reads the file again on its own; `keyring` waits until it has."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest

from ragplane import keys
from ragplane.client import api_key_metadata
from ragplane.keys import Role
from ragplane.ops import stack
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc

T = 120.0


@dataclass(frozen=True)
class Keyring:
    keys: dict[tuple[str, Role], str]  # (tenant, role) -> key
    key_ids: dict[tuple[str, Role], str]
    revoked: str

    def key(self, tenant: str, role: Role) -> str:
        return self.keys[(tenant, role)]


async def wait_until_accepted(address: str, key: str) -> None:
    """Returns once the gateway has read the key (its file is looked at each second)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for _ in range(100):
            try:
                await stub.ListCollections(
                    gateway_pb2.GatewayServiceListCollectionsRequest(),
                    metadata=api_key_metadata(key),
                    timeout=T,
                )
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
            await asyncio.sleep(0.2)
    raise AssertionError("the gateway never accepted a key added to its keys file")


@pytest.fixture(scope="session")
async def keyring(running_stack: stack.StackLayout) -> Keyring:
    made, ids = {}, {}
    for tenant in ("alpha", "beta"):
        for role in Role:
            key, record = keys.create_key(running_stack.keys_file, tenant, role, "security")
            made[(tenant, role)], ids[(tenant, role)] = key, record.id
    revoked, record = keys.create_key(running_stack.keys_file, "alpha", Role.ADMIN)
    await wait_until_accepted(running_stack.address("gateway"), revoked)
    keys.revoke_key(running_stack.keys_file, record.id)
    # A key written after the revocation: once it is accepted, the revocation is read too.
    sentinel, _ = keys.create_key(running_stack.keys_file, "alpha", Role.READER, "sentinel")
    await wait_until_accepted(running_stack.address("gateway"), sentinel)
    return Keyring(made, ids, revoked)
