"""Collections and documents over the gateway's gRPC API, as a platform team manages
them: create, list, describe, drop; PDF and DOCX ingested with page and heading sections;
list, get, update, delete documents; NOT_FOUND and INVALID_ARGUMENT where they apply; a
folder ingest that says what it skipped."""

from __future__ import annotations

import io

import grpc
import pytest

from ragplane.client import GrpcClient, IngestStatus
from ragplane.ops import cli
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import ROOT

FORMATS = ROOT / "samples" / "formats"
T = 120
NAME = "grpc_collections"


@pytest.fixture(scope="module")
def gateway(channels) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])


def sample(name: str, **fields) -> gateway_pb2.Document:
    path = FORMATS / name
    return gateway_pb2.Document(
        doc_id=name, source=f"samples/formats/{name}", content=path.read_bytes(), **fields
    )


@pytest.fixture(scope="module")
async def indexed(gateway) -> str:
    created = await gateway.CreateCollection(
        gateway_pb2.GatewayServiceCreateCollectionRequest(
            name=NAME, description="Postmortems and service pages"
        ),
        timeout=T,
    )
    assert created.created and created.collection.model.id
    reply = await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection=NAME,
            documents=[
                sample("postmortems-2026.pdf", tags=["postmortem"], metadata={"team": "atlas"}),
                sample("ledger-api.docx"),
            ],
        ),
        timeout=T,
    )
    assert [r.status for r in reply.results] == [gateway_pb2.INGEST_STATUS_WRITTEN] * 2, reply
    return NAME


async def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


async def test_a_collection_is_created_described_listed_and_dropped(gateway, indexed):
    described = await gateway.DescribeCollection(
        gateway_pb2.GatewayServiceDescribeCollectionRequest(name=indexed), timeout=T
    )
    c = described.collection
    assert (c.name, c.description, c.document_count) == (
        NAME,
        "Postmortems and service pages",
        2,
    )
    assert c.chunk_count >= 8 and c.model.dimension == 384
    assert c.update_time.ToMilliseconds() >= c.create_time.ToMilliseconds() > 0
    listed = await gateway.ListCollections(
        gateway_pb2.GatewayServiceListCollectionsRequest(), timeout=T
    )
    assert NAME in [x.name for x in listed.collections]
    again = await gateway.CreateCollection(
        gateway_pb2.GatewayServiceCreateCollectionRequest(name=NAME, exist_ok=True), timeout=T
    )
    assert not again.created
    code, _ = await status_of(
        gateway.CreateCollection(
            gateway_pb2.GatewayServiceCreateCollectionRequest(name=NAME), timeout=T
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    await gateway.CreateCollection(
        gateway_pb2.GatewayServiceCreateCollectionRequest(name="grpc_dropped"), timeout=T
    )
    await gateway.DropCollection(
        gateway_pb2.GatewayServiceDropCollectionRequest(name="grpc_dropped"), timeout=T
    )
    code, message = await status_of(
        gateway.DescribeCollection(
            gateway_pb2.GatewayServiceDescribeCollectionRequest(name="grpc_dropped"), timeout=T
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "grpc_dropped" in message


async def test_pdf_pages_and_docx_headings_become_citation_sections(gateway, indexed):
    found = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(
            collection=indexed, query="Why did the payouts go out twice?", top_k=3
        ),
        timeout=T,
    )
    top = found.hits[0].chunk
    assert top.doc_id == "postmortems-2026.pdf" and top.section.endswith("> p. 2"), top
    assert list(top.tags) == ["postmortem"]
    docx = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(
            collection=indexed,
            query="LEDG-4091 idempotency key reused",
            filter=common_pb2.MetadataFilter(doc_ids=["ledger-api.docx"]),
            top_k=1,
        ),
        timeout=T,
    )
    assert docx.hits[0].chunk.section == "Error codes"


async def test_documents_are_listed_got_updated_and_deleted(gateway, indexed):
    page = await gateway.ListDocuments(
        gateway_pb2.GatewayServiceListDocumentsRequest(collection=indexed, page_size=1),
        timeout=T,
    )
    assert [d.doc_id for d in page.documents] == ["ledger-api.docx"] and page.next_page_token
    rest = await gateway.ListDocuments(
        gateway_pb2.GatewayServiceListDocumentsRequest(
            collection=indexed, page_size=1, page_token=page.next_page_token
        ),
        timeout=T,
    )
    assert [d.doc_id for d in rest.documents] == ["postmortems-2026.pdf"]
    assert not rest.next_page_token
    got = await gateway.GetDocument(
        gateway_pb2.GatewayServiceGetDocumentRequest(
            collection=indexed, doc_id="postmortems-2026.pdf"
        ),
        timeout=T,
    )
    doc = got.document
    assert (doc.title, list(doc.tags), dict(doc.metadata)) == (
        "Postmortems 2026",
        ["postmortem"],
        {"team": "atlas"},
    )
    assert doc.doc_hash and doc.chunk_count >= 6 and doc.index_time.ToMilliseconds() > 0
    updated = await gateway.UpdateDocument(
        gateway_pb2.GatewayServiceUpdateDocumentRequest(
            collection=indexed,
            doc_id="postmortems-2026.pdf",
            patch=common_pb2.DocumentPatch(tags=common_pb2.StringList(values=["sev1"])),
        ),
        timeout=T,
    )
    assert list(updated.document.tags) == ["sev1"]
    assert updated.document.chunk_count == doc.chunk_count
    assert dict(updated.document.metadata) == {"team": "atlas"}
    tagged = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(
            collection=indexed, query="payouts", filter=common_pb2.MetadataFilter(tags=["sev1"])
        ),
        timeout=T,
    )
    assert tagged.hits and {h.chunk.doc_id for h in tagged.hits} == {"postmortems-2026.pdf"}
    deleted = await gateway.DeleteDocument(
        gateway_pb2.GatewayServiceDeleteDocumentRequest(
            collection=indexed, doc_id="ledger-api.docx"
        ),
        timeout=T,
    )
    assert deleted.chunks_deleted > 0


async def test_unknown_documents_are_not_found(gateway, indexed):
    for call in (
        gateway.GetDocument(
            gateway_pb2.GatewayServiceGetDocumentRequest(collection=indexed, doc_id="nope.md"),
            timeout=T,
        ),
        gateway.DeleteDocument(
            gateway_pb2.GatewayServiceDeleteDocumentRequest(collection=indexed, doc_id="nope.md"),
            timeout=T,
        ),
        gateway.UpdateDocument(
            gateway_pb2.GatewayServiceUpdateDocumentRequest(
                collection=indexed, doc_id="nope.md", patch=common_pb2.DocumentPatch(title="x")
            ),
            timeout=T,
        ),
    ):
        code, message = await status_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and "no document 'nope.md'" in message


async def test_an_unsupported_type_is_refused_by_name(gateway, indexed):
    code, message = await status_of(
        gateway.Ingest(
            gateway_pb2.IngestRequest(
                collection=indexed,
                documents=[
                    gateway_pb2.Document(doc_id="ok.md", content=b"# OK\n\nfine"),
                    gateway_pb2.Document(doc_id="guide.rst", content=b"Guide\n=====\n\ntext"),
                ],
            ),
            timeout=T,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'guide.rst' has unsupported media type" in message and "application/pdf" in message
    code, _ = await status_of(
        gateway.GetDocument(
            gateway_pb2.GatewayServiceGetDocumentRequest(collection=indexed, doc_id="ok.md"),
            timeout=T,
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND  # nothing of the request was written


async def test_a_folder_ingest_says_what_it_skipped_and_why(channels, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "postmortems-2026.pdf").write_bytes((FORMATS / "postmortems-2026.pdf").read_bytes())
    (folder / "guide.rst").write_text("Guide\n=====\n\ntext")
    (folder / ".hidden.md").write_text("# not sent")
    out = io.StringIO()
    client = GrpcClient(channels["gateway"])
    results = await cli.ingest(client, [folder], collection="cli_formats", out=out)
    assert [(r.doc_id, r.status) for r in results] == [
        ("postmortems-2026.pdf", IngestStatus.WRITTEN)
    ]
    report = out.getvalue()
    assert f"skipped {folder / 'guide.rst'}: unsupported type .rst" in report
    assert "1 written, 0 unchanged, 0 failed, 1 skipped" in report and ".hidden" not in report
    named = await cli.ingest(client, [folder / "guide.rst"], "cli_formats", out=io.StringIO())
    assert [r.status for r in named] == [IngestStatus.FAILED]  # named, so the CLI exits 1
