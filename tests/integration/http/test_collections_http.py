"""Collections and documents over the gateway's HTTP API: create, list, describe, drop;
a PDF and a DOCX uploaded as multipart/form-data; list, get, patch, delete documents;
404 for what is not there, 415 for a type ragplane cannot read."""

from __future__ import annotations

import json

import httpx
import pytest

from ragplane.ops import stack
from tests.support import ROOT

FORMATS = ROOT / "samples" / "formats"
T = 120
NAME = "http_collections"
PDF = "postmortems-2026.pdf"
DOCX = "ledger-api.docx"


@pytest.fixture(scope="module")
async def http(running_stack: stack.StackLayout) -> httpx.AsyncClient:
    base = f"http://{running_stack.http_address()}"
    headers = {"authorization": f"Bearer {running_stack.api_key()}"}
    async with httpx.AsyncClient(base_url=base, timeout=T, headers=headers) as client:
        yield client


def upload(*names: str, content_type: str | None = None) -> list[tuple[str, tuple]]:
    files = []
    for name in names:
        path = FORMATS / name
        content = path.read_bytes() if path.exists() else b"Guide\n=====\n\ntext"
        files.append(("files", (name, content, content_type or "application/octet-stream")))
    return files


@pytest.fixture(scope="module")
async def uploaded(http) -> dict:
    created = await http.post(
        "/v1/collections", json={"name": NAME, "description": "Uploaded over HTTP"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["created"] is True
    reply = await http.post(
        f"/v1/collections/{NAME}/documents",
        files=upload(PDF, DOCX),
        data={"tags": ["handbook", "formats"], "metadata": json.dumps({"team": "atlas"})},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_a_pdf_and_a_docx_upload_as_multipart(uploaded):
    assert uploaded["collection"] == NAME
    assert [(r["doc_id"], r["status"]) for r in uploaded["data"]] == [
        (PDF, "written"),
        (DOCX, "written"),
    ]
    assert all(r["chunks_written"] > 0 and r["error"] is None for r in uploaded["data"])


async def test_a_collection_is_described_listed_and_dropped(http, uploaded):
    described = (await http.get(f"/v1/collections/{NAME}")).json()
    assert described["description"] == "Uploaded over HTTP"
    assert described["document_count"] == 2 and described["chunk_count"] >= 8
    assert described["embedding_model"]["dimension"] == 384
    assert (
        described["create_time"].endswith("Z")
        and described["update_time"] >= (described["create_time"])
    )
    listed = (await http.get("/v1/collections")).json()
    assert NAME in [c["name"] for c in listed["data"]]
    again = await http.post("/v1/collections", json={"name": NAME, "exist_ok": True})
    assert again.status_code == 200 and again.json()["created"] is False
    assert (await http.post("/v1/collections", json={"name": NAME})).status_code == 409
    assert (await http.post("/v1/collections", json={"name": "http_gone"})).status_code == 201
    dropped = await http.delete("/v1/collections/http_gone")
    assert dropped.status_code == 200 and dropped.json()["deleted"] is True
    missing = await http.get("/v1/collections/http_gone")
    assert missing.status_code == 404 and "http_gone" in missing.json()["error"]["message"]


async def test_documents_are_listed_got_patched_and_deleted(http, uploaded):
    first = (await http.get(f"/v1/collections/{NAME}/documents", params={"limit": 1})).json()
    assert [d["doc_id"] for d in first["data"]] == [DOCX] and first["next_page_token"]
    rest = (
        await http.get(
            f"/v1/collections/{NAME}/documents",
            params={"limit": 1, "page_token": first["next_page_token"]},
        )
    ).json()
    assert [d["doc_id"] for d in rest["data"]] == [PDF] and rest["next_page_token"] is None
    got = (await http.get(f"/v1/collections/{NAME}/documents/{PDF}")).json()
    assert (got["title"], got["tags"], got["metadata"]) == (
        "Postmortems 2026",
        ["handbook", "formats"],
        {"team": "atlas"},
    )
    assert got["doc_hash"] and got["chunk_count"] >= 6 and got["index_time"].endswith("Z")
    patched = await http.patch(
        f"/v1/collections/{NAME}/documents/{PDF}",
        json={"metadata": {"team": "meridian"}, "title": "Postmortems"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["title"], body["metadata"], body["tags"]) == (
        "Postmortems",
        {"team": "meridian"},
        ["handbook", "formats"],
    )
    assert body["chunk_count"] == got["chunk_count"] and body["doc_hash"] == got["doc_hash"]
    found = (
        await http.post(
            "/v1/search",
            json={"query": "duplicate payouts Redis failover", "collection": NAME, "top_k": 1},
        )
    ).json()
    hit = found["hits"][0]
    assert (hit["doc_id"], hit["title"]) == (PDF, "Postmortems")
    assert hit["section"].endswith("> p. 2")
    deleted = await http.delete(f"/v1/collections/{NAME}/documents/{DOCX}")
    assert deleted.status_code == 200 and deleted.json()["chunks_deleted"] > 0


async def test_unknown_documents_are_404(http, uploaded):
    path = f"/v1/collections/{NAME}/documents/no/such.md"
    for reply in (
        await http.get(path),
        await http.delete(path),
        await http.patch(path, json={"tags": ["x"]}),
    ):
        assert reply.status_code == 404, reply.text
        assert (
            reply.json()["error"]["message"] == f"no document 'no/such.md' in collection '{NAME}'"
        )


async def test_an_rst_upload_is_415_naming_the_type(http, uploaded):
    reply = await http.post(f"/v1/collections/{NAME}/documents", files=upload("guide.rst"))
    assert reply.status_code == 415, reply.text
    error = reply.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "'guide.rst' has unsupported media type" in error["message"]
    assert (await http.get(f"/v1/collections/{NAME}/documents/guide.rst")).status_code == 404
