"""API keys, roles, tenant namespaces and quotas, without a stack: the key file and its
reload, what each refusal says, the role tables against the proto and the routes, the
namespaced retriever against a recording stub, the token bucket on a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragplane import keys
from ragplane.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from ragplane.gateway import auth, tenancy
from ragplane.gateway.auth import Authenticator, KeyStore, Principal
from ragplane.gateway.http.router import router
from ragplane.gateway.quotas import Quotas, QuotaSettings
from ragplane.keys import Role
from ragplane.ops import cli, keys_cli
from ragplane.v1 import common_pb2, gateway_pb2, retriever_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "keys.json"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- the keys file ----


def test_a_created_key_is_stored_only_as_a_salted_hash_readable_by_its_owner(keys_file):
    key, record = keys.create_key(keys_file, "acme", Role.WRITER, name="ci")
    assert key.startswith(f"rpk_{record.id}_")
    text = keys_file.read_text()
    assert key.split("_", 2)[2] not in text
    assert mode(keys_file) == 0o600
    (stored,) = keys.read_keys(keys_file)
    assert stored == record and stored.matches(key.split("_", 2)[2])


def test_two_keys_of_one_secret_length_get_different_salts(keys_file):
    _, a = keys.create_key(keys_file, "acme", Role.READER)
    _, b = keys.create_key(keys_file, "acme", Role.READER)
    assert a.salt != b.salt and a.id != b.id
    assert [r.id for r in keys.read_keys(keys_file)] == [a.id, b.id]


@pytest.mark.parametrize("tenant", ["", "Acme", "a_b", "1abc", "a" * 33, "a-b"])
def test_a_tenant_id_that_could_blur_a_namespace_is_refused(keys_file, tenant):
    with pytest.raises(ValueError, match="tenant"):
        keys.create_key(keys_file, tenant, Role.READER)


def test_ragplane_up_makes_one_admin_key_for_the_local_tenant_once(tmp_path):
    written = keys.ensure_local_key(tmp_path)
    assert written == tmp_path / keys.API_KEY_FILE
    assert mode(tmp_path / keys.KEYS_FILE) == 0o600 and mode(written) == 0o600
    key = keys.read_api_key(tmp_path)
    store = KeyStore(tmp_path / keys.KEYS_FILE)
    record = store.lookup(key or "")
    assert record is not None and (record.tenant, record.role) == ("local", "admin")
    assert keys.ensure_local_key(tmp_path) is None  # a second `up` keeps the file
    assert keys.read_api_key(tmp_path) == key


# ---- the key store ----


def test_lookup_accepts_the_key_and_nothing_near_it(keys_file):
    key, record = keys.create_key(keys_file, "acme", Role.READER)
    store = KeyStore(keys_file)
    assert store.lookup(key) == record
    for wrong in [key + "x", key[:-1], key.replace("rpk_", "rpk"), "rpk_zzzzzzzzzzzz_abc", ""]:
        assert store.lookup(wrong) is None


def test_a_revoked_or_added_key_is_seen_within_a_second_without_a_restart(keys_file):
    old, record = keys.create_key(keys_file, "acme", Role.READER)
    clock = Clock()
    store = KeyStore(keys_file, clock=clock)
    keys.revoke_key(keys_file, record.id)
    new, _ = keys.create_key(keys_file, "acme", Role.READER)
    assert store.lookup(old) is not None  # not looked at again yet
    clock.now += auth.RELOAD_INTERVAL_S
    assert store.lookup(old) is None
    assert store.lookup(new) is not None


def test_a_secret_symlink_swap_is_followed(tmp_path):
    # What kubelet does to a mounted Secret: a new directory, then `..data` swapped.
    first, second = tmp_path / "v1", tmp_path / "v2"
    key1, _ = keys.create_key(first / "keys.json", "acme", Role.READER)
    key2, _ = keys.create_key(second / "keys.json", "acme", Role.READER)
    (tmp_path / "..data").symlink_to(first)
    (tmp_path / "keys.json").symlink_to(tmp_path / "..data" / "keys.json")
    clock = Clock()
    store = KeyStore(tmp_path / "keys.json", clock=clock)
    assert store.lookup(key1) and not store.lookup(key2)
    (tmp_path / "..data_tmp").symlink_to(second)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    clock.now += auth.RELOAD_INTERVAL_S
    assert store.lookup(key2) and not store.lookup(key1)


def test_a_broken_keys_file_keeps_the_keys_read_before(keys_file):
    key, _ = keys.create_key(keys_file, "acme", Role.READER)
    clock = Clock()
    store = KeyStore(keys_file, clock=clock)
    keys_file.write_text("{not json")
    clock.now += auth.RELOAD_INTERVAL_S
    assert store.lookup(key) is not None


def test_the_gateway_will_not_start_without_keys_unless_told_to(monkeypatch, tmp_path):
    monkeypatch.delenv("RAGPLANE_GATEWAY_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("RAGPLANE_GATEWAY_AUTH", raising=False)
    with pytest.raises(auth.ConfigError, match="RAGPLANE_GATEWAY_API_KEYS_FILE"):
        auth.AuthSettings.from_env()
    monkeypatch.setenv("RAGPLANE_GATEWAY_API_KEYS_FILE", str(tmp_path / "absent.json"))
    with pytest.raises(auth.ConfigError, match="RAGPLANE_GATEWAY_API_KEYS_FILE"):
        Authenticator.from_settings(auth.AuthSettings.from_env(), Quotas(QuotaSettings()))
    monkeypatch.setenv("RAGPLANE_GATEWAY_AUTH", "disabled")
    assert auth.AuthSettings.from_env().keys_file is None


# ---- authentication and roles ----


def authenticator(keys_file, **quota) -> Authenticator:
    return Authenticator(KeyStore(keys_file), Quotas(QuotaSettings(**quota)))


def test_missing_and_bad_keys_are_unauthenticated_and_say_nothing_of_other_keys(keys_file):
    key, record = keys.create_key(keys_file, "acme", Role.READER)
    gate = authenticator(keys_file)
    for header in [None, "", "Basic abc", "Bearer"]:
        with pytest.raises(Unauthenticated, match="missing API key"):
            gate.authenticate(header)
    messages = set()
    for header in [f"Bearer {key}x", "Bearer rpk_zzzzzzzzzzzz_abc", "Bearer nonsense"]:
        with pytest.raises(Unauthenticated) as refused:
            gate.authenticate(header)
        messages.add(str(refused.value))
    assert messages == {auth.INVALID}
    assert gate.authenticate(f"bearer {key}") == Principal(record.id, "acme", Role.READER)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READER, {"Ask", "Search", "ListCollections"}),
        (Role.WRITER, {"Ask", "Ingest", "DeleteDocument", "CreateIngestJob"}),
        (Role.ADMIN, {"Ingest", "CreateCollection", "DropCollection"}),
    ],
)
def test_each_role_may_do_its_own_and_less(keys_file, role, allowed):
    keys.create_key(keys_file, "acme", Role.READER)
    gate = authenticator(keys_file)
    principal = Principal("k", "acme", role)
    for action, needed in auth.GRPC_ROLES.items():
        if needed <= role:
            gate.authorize(principal, action, auth.GRPC_ROLES)
        else:
            with pytest.raises(PermissionDenied, match=f"needs the {needed.label} role"):
                gate.authorize(principal, action, auth.GRPC_ROLES)
    assert all(auth.GRPC_ROLES[a] <= role for a in allowed)


def test_every_rpc_and_route_has_a_role_and_an_unknown_action_needs_admin():
    service = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
    assert {m.name for m in service.methods} == set(auth.GRPC_ROLES)
    assert {r.name for r in router.routes} == set(auth.HTTP_ROLES)  # type: ignore[attr-defined]
    assert auth.required_role(auth.GRPC_ROLES, "SomethingNew") == Role.ADMIN


def test_reads_are_not_audited_writes_and_admin_calls_are():
    assert not auth.audited(auth.GRPC_ROLES, "Ask")
    assert not auth.audited(auth.HTTP_ROLES, "get_job")
    assert auth.audited(auth.GRPC_ROLES, "Ingest")
    assert auth.audited(auth.HTTP_ROLES, "drop_collection")


def test_an_audit_line_says_who_what_and_the_result(caplog):
    with caplog.at_level("INFO", logger="ragplane.audit"):
        auth.record_audit(
            Principal("abc", "acme", Role.WRITER),
            "Ingest",
            "grpc",
            {"collection": "docs"},
            "OK",
        )
    entry = json.loads(caplog.records[-1].getMessage())
    assert entry["key_id"] == "abc" and entry["tenant"] == "acme" and entry["role"] == "writer"
    assert (entry["action"], entry["result"], entry["target"]) == (
        "Ingest",
        "OK",
        {"collection": "docs"},
    )
    assert entry["time"]


# ---- quotas ----


def test_the_rate_limit_refuses_with_the_time_until_the_next_request_is_allowed():
    clock = Clock()
    quotas = Quotas(QuotaSettings(requests_per_second=2.0, burst=2), clock=clock)
    quotas.admit_request("k", "acme")
    quotas.admit_request("k", "acme")
    with pytest.raises(ResourceExhausted) as refused:
        quotas.admit_request("k", "acme")
    assert refused.value.retry_after == pytest.approx(0.5)
    quotas.admit_request("other", "acme")  # per key
    clock.now += 0.5
    quotas.admit_request("k", "acme")


def test_streams_are_limited_per_key_and_freed_when_they_end():
    quotas = Quotas(QuotaSettings(max_streams=1))
    with quotas.stream("k", "acme"):
        with pytest.raises(ResourceExhausted) as refused, quotas.stream("k", "acme"):
            pass
        assert refused.value.retry_after
        with quotas.stream("other", "acme"):
            pass
    with quotas.stream("k", "acme"):
        pass


def test_storage_is_limited_per_tenant():
    quotas = Quotas(QuotaSettings(max_tenant_chunks=10))
    quotas.check_storage("acme", 4, 6)
    with pytest.raises(ResourceExhausted, match="limit of 10") as refused:
        quotas.check_storage("acme", 4, 7)
    assert refused.value.retry_after


# ---- tenant namespaces ----

TENANTS = st.from_regex(keys.TENANT_ID, fullmatch=True)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True)


@given(TENANTS, TENANTS, NAMES, NAMES)
def test_no_name_of_one_tenant_is_a_name_of_another(a, b, name_a, name_b):
    stored = tenancy.stored_name(a, name_a)
    assert tenancy.public_name(a, stored) == name_a
    if a != b:
        assert tenancy.stored_name(b, name_b) != stored
        assert tenancy.public_name(b, stored) is None


class RecordingStub:
    """The retriever's stub as far as NamespacedRetriever uses it: records requests."""

    def __init__(self, collections: list[str], error: grpc.aio.AioRpcError | None = None):
        self.sent: list[object] = []
        self.collections = collections
        self.error = error

    def __getattr__(self, method: str):
        async def call(request, **kwargs):
            self.sent.append(request)
            if self.error is not None:
                raise self.error
            if method == "ListCollections":
                return retriever_pb2.ListCollectionsResponse(
                    collections=[retriever_pb2.Collection(name=n) for n in self.collections]
                )
            if method == "Search":
                hits = [common_pb2.ScoredChunk(collection=request.collection)]
                return retriever_pb2.SearchResponse(hits=hits)
            if method == "DescribeCollection":
                return retriever_pb2.DescribeCollectionResponse(
                    collection=retriever_pb2.Collection(name=request.name)
                )
            return getattr(retriever_pb2, f"{method}Response")()

        return call


def as_tenant(tenant: str, coroutine):
    async def run():
        with auth.acting_as(Principal("k", tenant, Role.ADMIN)):
            return await coroutine

    return asyncio.run(run())


def test_every_collection_field_goes_out_namespaced_and_comes_back_public():
    stub = RecordingStub(["acme__docs", "acme__wiki", "other__docs", "legacy"])
    retriever = tenancy.NamespacedRetriever(stub)  # type: ignore[arg-type]
    listed = as_tenant("acme", retriever.ListCollections(retriever_pb2.ListCollectionsRequest()))
    assert [c.name for c in listed.collections] == ["docs", "wiki"]
    search = retriever_pb2.SearchRequest(collection="docs", extra_collections=["wiki", "x"])
    found = as_tenant("acme", retriever.Search(search))
    sent = stub.sent[-1]
    assert (sent.collection, list(sent.extra_collections)) == (
        "acme__docs",
        ["acme__wiki", "acme__x"],
    )
    assert [h.collection for h in found.hits] == ["docs"]
    assert search.collection == "docs"  # the caller's request is left alone
    for method, request in [
        ("ListDocuments", retriever_pb2.ListDocumentsRequest(collection="docs")),
        ("DeleteDocument", retriever_pb2.DeleteDocumentRequest(collection="docs", doc_id="a")),
        ("UpdateDocument", retriever_pb2.UpdateDocumentRequest(collection="docs", doc_id="a")),
        ("Upsert", retriever_pb2.UpsertRequest(collection="docs")),
    ]:
        as_tenant("acme", getattr(retriever, method)(request))
        assert stub.sent[-1].collection == "acme__docs", method
    for method, request in [
        ("CreateCollection", retriever_pb2.CreateCollectionRequest(name="docs")),
        ("DescribeCollection", retriever_pb2.DescribeCollectionRequest(name="docs")),
        ("DropCollection", retriever_pb2.DropCollectionRequest(name="docs")),
    ]:
        as_tenant("acme", getattr(retriever, method)(request))
        assert stub.sent[-1].name == "acme__docs", method


def test_the_retriever_s_errors_name_the_tenant_s_collection_not_the_stored_one():
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("retry-after", "3")),
        "collection 'acme__docs' does not exist",
    )
    retriever = tenancy.NamespacedRetriever(RecordingStub([], error))  # type: ignore[arg-type]
    request = retriever_pb2.DescribeCollectionRequest(name="docs")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        as_tenant("acme", retriever.DescribeCollection(request))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "collection 'docs' does not exist"
    assert ("retry-after", "3") in list(raised.value.trailing_metadata())


def test_without_a_caller_nothing_reaches_the_retriever():
    stub = RecordingStub(["acme__docs"])
    retriever = tenancy.NamespacedRetriever(stub)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        asyncio.run(retriever.ListCollections(retriever_pb2.ListCollectionsRequest()))
    assert stub.sent == []


def test_a_write_past_the_tenant_s_storage_is_refused_before_it_is_sent():
    stub = RecordingStub(["acme__docs"])
    quotas = Quotas(QuotaSettings(max_tenant_chunks=1))
    retriever = tenancy.NamespacedRetriever(stub, quotas)  # type: ignore[arg-type]
    chunks = [retriever_pb2.IndexedChunk(), retriever_pb2.IndexedChunk()]
    request = retriever_pb2.UpsertRequest(
        collection="docs", documents=[retriever_pb2.DocumentChunks(doc_id="a", chunks=chunks)]
    )
    with pytest.raises(ResourceExhausted):
        as_tenant("acme", retriever.Upsert(request))
    assert not any(isinstance(r, retriever_pb2.UpsertRequest) for r in stub.sent)


# ---- the CLI ----


def test_keys_create_list_revoke(keys_file, capsys):
    parser = cli.parser()
    args = parser.parse_args(
        ["keys", "create", "--tenant", "acme", "--role", "writer", "--file", str(keys_file)]
    )
    assert keys_cli.run(args) == 0
    key = capsys.readouterr().out.strip()
    assert KeyStore(keys_file).lookup(key) is not None
    listing = parser.parse_args(["keys", "list", "--json", "--file", str(keys_file)])
    assert keys_cli.run(listing) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(k["tenant"], k["role"], k["revoked"]) for k in listed] == [("acme", "writer", None)]
    assert "salt" not in listed[0] and "hash" not in listed[0]
    key_id = listed[0]["id"]
    revoke = parser.parse_args(["keys", "revoke", key_id, "--file", str(keys_file)])
    assert keys_cli.run(revoke) == 0
    assert KeyStore(keys_file).lookup(key) is None
