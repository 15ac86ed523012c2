"""The `ragplane` CLI as a user runs it: a separate process, started from a directory that
is not the repository, reaching the stack's gateway with --gateway (or RAGPLANE_GATEWAY)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragplane.client import GatewayError, HttpClient
from tests.support import ROOT, free_port

CORPUS = ROOT / "samples" / "handbook"
COLLECTION = "cli_handbook"
QUESTION = "How do I roll back a bad deploy of ledger-api?"


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-cwd")


async def ragplane(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """`ragplane ARGS...` run from workdir with a state dir of its own (XDG_STATE_HOME)."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("RAGPLANE_STATE_DIR", "RAGPLANE_GATEWAY")
    }
    environ["XDG_STATE_HOME"] = str(workdir / "xdg-state")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ragplane.ops.cli",
        *args,
        cwd=workdir,
        env={**environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def ingested(running_stack, workdir: Path) -> Run:
    gateway = running_stack.address("gateway")
    return await ragplane(
        workdir, "ingest", "--gateway", gateway, "--collection", COLLECTION, str(CORPUS)
    )


async def test_ingest_from_another_directory_reaches_the_gateway(ingested, workdir):
    files = [p for p in CORPUS.rglob("*") if p.suffix in {".md", ".html"}]
    assert ingested.code == 0, ingested.err
    assert f"{len(files)}/{len(files)} documents" in ingested.out  # the progress line
    assert f"{len(files)} written, 0 unchanged, 0 failed" in ingested.out
    # Nothing lands in the working directory.
    assert not (workdir / ".ragplane").exists()


async def test_ask_json_gives_the_answer_with_its_citations(running_stack, ingested, workdir):
    gateway = running_stack.address("gateway")
    run = await ragplane(
        workdir, "ask", "--gateway", gateway, "--collection", COLLECTION, "--json", QUESTION
    )
    assert run.code == 0, run.err
    reply = json.loads(run.out)
    assert reply["answer"].strip() and not reply["abstained"]
    assert reply["abstain_reason"] is None
    assert reply["finish_reason"] in ("stop", "length")
    assert any(c["doc_id"] == "runbooks/deploy.md" for c in reply["citations"]), reply
    assert reply["usage"]["completion_tokens"] > 0
    assert reply["timings"]["total_ms"] > 0


async def test_ask_filters_by_tag(running_stack, ingested, workdir):
    # No sample document carries this tag: nothing is found, and the answer abstains.
    run = await ragplane(
        workdir,
        "ask",
        "--collection",
        COLLECTION,
        "--mode",
        "keyword",
        "--tag",
        "no-such-tag",
        "--json",
        QUESTION,
        env={"RAGPLANE_GATEWAY": running_stack.address("gateway")},
    )
    assert run.code == 0, run.err
    reply = json.loads(run.out)
    assert reply["abstained"] and reply["abstain_reason"] == "no_hits"
    assert reply["citations"] == []


async def test_an_answer_cut_at_max_tokens_says_so(running_stack, ingested, workdir):
    gateway = running_stack.address("gateway")
    run = await ragplane(
        workdir,
        "ask",
        "--gateway",
        gateway,
        "--collection",
        COLLECTION,
        "--max-tokens",
        "4",
        QUESTION,
    )
    assert run.code == 0, run.err
    assert "answer cut at the token limit" in run.out
    assert "Sources:" in run.out


async def test_no_gateway_at_the_address_gets_a_hint(workdir):
    address = f"127.0.0.1:{free_port()}"
    run = await ragplane(workdir, "ask", "--gateway", address, QUESTION)
    assert run.code != 0
    assert f"no gateway at {address}: start the stack with `ragplane up`" in run.err
    assert "UNAVAILABLE" not in run.err


async def test_state_lives_in_the_users_state_dir_not_the_working_directory(workdir):
    # Exit status not asserted: it depends on whether a stack runs on the default ports.
    await ragplane(workdir, "status")
    assert (workdir / "xdg-state" / "ragplane").is_dir()
    assert not (workdir / ".ragplane").exists()


async def test_ask_over_the_http_api(running_stack, ingested, workdir):
    url = f"http://{running_stack.http_address()}"
    run = await ragplane(
        workdir,
        "ask",
        "--http",
        url,
        "--collection",
        COLLECTION,
        "--tag",
        "no-such-tag",
        "--json",
        QUESTION,
    )
    assert run.code == 0, run.err
    reply = json.loads(run.out)
    assert reply["abstained"] and reply["abstain_reason"] == "no_hits"


async def test_http_client_asks_the_http_api(running_stack, ingested):
    async with HttpClient(f"http://{running_stack.http_address()}") as gateway:
        answer, citations, finished = await gateway.ask_text(QUESTION, collection=COLLECTION)
        hits = await gateway.search(QUESTION, collection=COLLECTION, top_k=3)
        with pytest.raises(GatewayError) as missing:
            await gateway.ask_text(QUESTION, collection="no_such_collection")
    assert answer.strip() and not finished.abstained and finished.usage.completion_tokens > 0
    assert any(c.doc_id == "runbooks/deploy.md" and c.text for c in citations)
    assert len(hits) == 3 and all(h.collection == COLLECTION for h in hits)
    assert (missing.value.code, missing.value.http_status) == ("NOT_FOUND", 404)


async def test_deleting_an_unknown_document_fails(running_stack, ingested, workdir):
    gateway = running_stack.address("gateway")
    run = await ragplane(
        workdir, "delete", "--gateway", gateway, "--collection", COLLECTION, "no/such.md"
    )
    assert run.code == 1
    assert "no document 'no/such.md'" in run.err


async def test_deleting_a_document_removes_its_chunks(running_stack, ingested, workdir):
    gateway = running_stack.address("gateway")
    args = ("delete", "--gateway", gateway, "--collection", COLLECTION, "runbooks/deploy.md")
    first = await ragplane(workdir, *args)
    assert first.code == 0, first.err
    assert first.out.startswith("deleted ") and "chunks of runbooks/deploy.md" in first.out
    again = await ragplane(workdir, *args)
    assert again.code == 1 and "no document" in again.err
