"""`ragplane up | down | status | ingest PATH... | ask QUESTION | delete DOC_ID`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

from ragplane.config import DEFAULT_PORTS, env_int, state_dir
from ragplane.ops import stack
from ragplane.server import channel_options
from ragplane.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
)

DOCUMENT_SUFFIXES = {".md", ".markdown", ".html", ".htm", ".txt"}
INGEST_BATCH = 8
INGEST_TIMEOUT_S = 300.0
ASK_TIMEOUT_S = 180.0


def layout_from_env() -> stack.StackLayout:
    """Ports can be moved with RAGPLANE_<NAME>_PORT (e.g. RAGPLANE_GATEWAY_PORT)."""
    ports = {
        name: env_int(f"RAGPLANE_{name.upper()}_PORT", port, minimum=1, maximum=65535)
        for name, port in DEFAULT_PORTS.items()
    }
    return stack.StackLayout(state_dir=state_dir(), ports=ports)


def find_documents(paths: list[Path]) -> Iterator[tuple[str, Path]]:
    """(doc_id, file) pairs: a file's id is its name, a folder's files are ids relative to it."""
    for root in paths:
        if root.is_file():
            yield root.name, root
        elif root.is_dir():
            for file in sorted(root.rglob("*")):
                if file.is_file() and file.suffix.lower() in DOCUMENT_SUFFIXES:
                    yield file.relative_to(root).as_posix(), file
        else:
            raise SystemExit(f"ragplane: {root} does not exist")


async def ingest(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    paths: list[Path],
    collection: str = "",
    out=sys.stdout,
) -> list[gateway_pb2.DocumentResult]:
    """Sends documents in batches, drawing a progress line; returns every result."""
    found = list(find_documents(paths))
    results: list[gateway_pb2.DocumentResult] = []
    chunks = 0
    for start in range(0, len(found), INGEST_BATCH):
        batch = found[start : start + INGEST_BATCH]
        documents = [
            gateway_pb2.Document(doc_id=doc_id, source=str(file), content=file.read_bytes())
            for doc_id, file in batch
        ]
        reply = await gateway.Ingest(
            gateway_pb2.IngestRequest(collection=collection, documents=documents),
            timeout=INGEST_TIMEOUT_S,
        )
        results.extend(reply.results)
        chunks += sum(r.chunks_written for r in reply.results)
        _progress(out, len(results), len(found), chunks)
    out.write("\n")
    summary = {s: 0 for s in ("WRITTEN", "UNCHANGED", "FAILED")}
    for r in results:
        summary[gateway_pb2.IngestStatus.Name(r.status).removeprefix("INGEST_STATUS_")] += 1
        if r.status == gateway_pb2.INGEST_STATUS_FAILED:
            out.write(f"  failed {r.doc_id}: {r.error}\n")
    out.write(
        f"{summary['WRITTEN']} written, {summary['UNCHANGED']} unchanged, "
        f"{summary['FAILED']} failed; {chunks} chunks written\n"
    )
    return results


def _progress(out, done: int, total: int, chunks: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    out.write(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} documents, {chunks} chunks"
    )
    out.flush()


async def ask(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    question: str,
    collection: str = "",
    out=sys.stdout,
) -> tuple[str, list[gateway_pb2.Citation], gateway_pb2.AskFinished]:
    """Prints the streamed answer, then its sources and timings."""
    out.write(f"Q: {question}\nA: ")
    answer: list[str] = []
    citations: list[gateway_pb2.Citation] = []
    finished = gateway_pb2.AskFinished()
    stream = gateway.Ask(
        gateway_pb2.AskRequest(collection=collection, question=question), timeout=ASK_TIMEOUT_S
    )
    async for event in stream:
        if event.HasField("citations"):
            citations = list(event.citations.citations)
        elif event.HasField("finished"):
            finished = event.finished
        else:
            answer.append(event.delta)
            out.write(event.delta)
            out.flush()
    out.write("\n")
    if citations:
        out.write("Sources:\n")
        for c in citations:
            where = f"{c.title} — {c.section}" if c.section else c.title
            out.write(f"  [{c.index}] {where} ({c.source})\n")
    t = finished.timings
    out.write(
        f"({'abstained, ' if finished.abstained else ''}embed {t.embed_ms:.0f} ms, "
        f"retrieve {t.retrieve_ms:.0f} ms, first token {t.time_to_first_token_ms:.0f} ms, "
        f"total {t.total_ms:.0f} ms, {finished.usage.completion_tokens} tokens)\n\n"
    )
    return "".join(answer), citations, finished


async def status(layout: stack.StackLayout, out=sys.stdout) -> bool:
    """One line per process: pid, health, address and model. True when all serve."""
    healthy = True
    for name in ("milvus", *stack.SERVICES):
        pid = stack.running_pid(layout, name)
        address = layout.address(name)
        if name == "milvus":
            state = "SERVING" if stack.port_open(layout.host, layout.ports[name]) else "UNREACHABLE"
        else:
            state = await stack.health_status(address)
        model = await _model_of(name, address) if state == "SERVING" else ""
        healthy &= state == "SERVING"
        out.write(f"{name:<10} {state:<12} pid {pid or '-':<8} {address:<22} {model}\n")
    return healthy


async def _model_of(name: str, address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            if name == "embedder":
                info = await embedder_pb2_grpc.EmbedderServiceStub(channel).Info(
                    embedder_pb2.EmbedderServiceInfoRequest(), timeout=5
                )
                m = info.model
                return f"{m.id}@{m.revision} ({m.dimension}-d, {info.device})"
            if name == "generator":
                g = await generator_pb2_grpc.GeneratorServiceStub(channel).Info(
                    generator_pb2.GeneratorServiceInfoRequest(), timeout=5
                )
                return f"{g.model.id}@{g.model.revision} ({g.backend}, {g.max_model_len} tokens)"
        except grpc.aio.AioRpcError as exc:
            return f"(info failed: {exc.code().name})"
    return ""


def gateway_channel(layout: stack.StackLayout) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(layout.address("gateway"), options=channel_options())


async def _main(args: argparse.Namespace) -> int:
    layout = layout_from_env()
    if args.command == "up":
        await stack.up(layout)
        return 0
    if args.command == "down":
        stack.down(layout)
        return 0
    if args.command == "status":
        return 0 if await status(layout) else 1
    async with gateway_channel(layout) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        if args.command == "ingest":
            results = await ingest(gateway, args.paths, args.collection)
            return 1 if any(r.status == gateway_pb2.INGEST_STATUS_FAILED for r in results) else 0
        if args.command == "ask":
            await ask(gateway, args.question, args.collection)
            return 0
        if args.command == "delete":
            reply = await gateway.DeleteDocument(
                gateway_pb2.GatewayServiceDeleteDocumentRequest(
                    collection=args.collection, doc_id=args.doc_id
                ),
                timeout=60,
            )
            print(f"deleted {reply.chunks_deleted} chunks of {args.doc_id}")
            return 0
    return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragplane", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Milvus Lite and the four services on loopback")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="health, pid, address and model of each process")
    for name, helptext in (
        ("ingest", "index files and folders (Markdown, HTML, text)"),
        ("ask", "ask a question; the answer streams with its sources"),
        ("delete", "remove a document's chunks"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--collection", default="", help="collection (gateway default if empty)")
        if name == "ingest":
            cmd.add_argument("paths", nargs="+", type=Path)
        elif name == "ask":
            cmd.add_argument("question")
        else:
            cmd.add_argument("doc_id")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = asyncio.run(_main(args))
    except grpc.aio.AioRpcError as exc:
        sys.stderr.write(f"ragplane: {exc.code().name}: {exc.details()}\n")
        code = 1
    except stack.StartError as exc:
        sys.stderr.write(f"ragplane: {exc}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
