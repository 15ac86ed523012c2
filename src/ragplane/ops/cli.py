"""`ragplane up | down | status | ingest PATH... | ask QUESTION | delete DOC_ID |
collections [list | create NAME | describe NAME | drop NAME] | documents [COLLECTION] |
sync FOLDER | jobs [list | show ID | watch ID | cancel ID] | keys [create | list | revoke]`.

ingest, ask, delete, collections and documents go through ragplane.client to the local
stack's gateway, or to another with --gateway HOST:PORT ($RAGPLANE_GATEWAY) or --http URL;
over TLS with --tls or --ca FILE ($RAGPLANE_GATEWAY_CA)."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from ragplane.channels import open_channel
from ragplane.client import (
    MODES,
    Citation,
    Citations,
    Document,
    Finished,
    GatewayClient,
    GatewayError,
    GrpcClient,
    HttpClient,
    IngestResult,
    IngestStatus,
    SearchMode,
    api_key_for,
    api_key_interceptors,
)
from ragplane.config import DEFAULT_PORTS, env_int, env_str, state_dir
from ragplane.ops import keys_cli, processes, stack
from ragplane.telemetry import METRICS_PORTS
from ragplane.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
)

# What the gateway reads (ragplane.gateway.loaders); other files are skipped, and said so.
DOCUMENT_SUFFIXES = {
    ".md",
    ".markdown",
    ".html",
    ".htm",
    ".txt",
    ".text",
    ".csv",
    ".log",
    ".pdf",
    ".docx",
    ".pptx",
}
INGEST_BATCH = 8
# Requests in flight: the gateway reads and chunks one batch while it embeds another.
INGEST_IN_FLIGHT = 2
INGEST_TIMEOUT_S = 300.0
ASK_TIMEOUT_S = 180.0
# The commands that talk to a gateway (local or --gateway/--http), with their help.
GATEWAY_COMMANDS = {
    "ingest": "index files and folders (Markdown, HTML, text, PDF, DOCX, PPTX)",
    "ask": "ask a question; the answer streams with its sources",
    "delete": "remove a document's chunks",
    "collections": "list collections, or create, describe or drop one",
    "documents": "list a collection's documents",
    "sync": "make a collection match a folder, as a job: changed files re-indexed, "
    "with --delete-missing those gone deleted",
    "jobs": "list ingestion jobs, or show, watch or cancel one",
}


def layout_from_env() -> stack.StackLayout:
    """Ports can be moved with RAGPLANE_<NAME>_PORT (e.g. RAGPLANE_GATEWAY_PORT), the HTTP
    API's with RAGPLANE_GATEWAY_HTTP_PORT."""
    ports = {
        name: env_int(f"RAGPLANE_{name.upper()}_PORT", port, minimum=1, maximum=65535)
        for name, port in DEFAULT_PORTS.items()
    }
    http_port = env_int(
        "RAGPLANE_GATEWAY_HTTP_PORT", stack.StackLayout.http_port, minimum=1, maximum=65535
    )
    # RAGPLANE_<SERVICE>_METRICS_PORT moves a metrics port: a second stack beside the first.
    metrics_ports = {
        name: env_int(f"RAGPLANE_{name.upper()}_METRICS_PORT", port, minimum=1, maximum=65535)
        for name, port in METRICS_PORTS.items()
    }
    postgres_port = env_int(
        "RAGPLANE_POSTGRES_PORT", stack.StackLayout.postgres_port, minimum=1, maximum=65535
    )
    return stack.StackLayout(
        state_dir=state_dir(),
        ports=ports,
        http_port=http_port,
        metrics_ports=metrics_ports,
        postgres_port=postgres_port,
    )


@dataclass(frozen=True)
class Skipped:
    """A file not sent, and why; `named`: the caller named it, not only its folder."""

    path: Path
    reason: str
    named: bool = False


def find_documents(paths: list[Path]) -> Iterator[tuple[str, Path] | Skipped]:
    """(doc_id, file) pairs, and a Skipped for each file ragplane cannot read: a file's
    id is its name, a folder's files are ids relative to it. Hidden files and folders
    (.git, .DS_Store) are passed over without a word."""
    for root in paths:
        if root.is_file():
            yield _readable(root, root.name, named=True)
        elif root.is_dir():
            for file in sorted(root.rglob("*")):
                relative = file.relative_to(root)
                if file.is_file() and not any(p.startswith(".") for p in relative.parts):
                    yield _readable(file, relative.as_posix())
        else:
            raise SystemExit(f"ragplane: {root} does not exist")


def _readable(file: Path, doc_id: str, named: bool = False) -> tuple[str, Path] | Skipped:
    suffix = file.suffix.lower()
    if suffix and suffix not in DOCUMENT_SUFFIXES:
        readable = ", ".join(sorted(DOCUMENT_SUFFIXES))
        return Skipped(file, f"unsupported type {suffix} (ragplane reads {readable})", named)
    return doc_id, file


async def ingest(
    gateway: GatewayClient,
    paths: list[Path],
    collection: str = "",
    out=sys.stdout,
) -> list[IngestResult]:
    """Sends documents in batches, drawing a progress line, then says what failed and
    what was skipped and why; returns every result (a skipped file named on the command
    line, or nothing to send at all, is a FAILED result)."""
    scanned = list(find_documents(paths))
    found = [entry for entry in scanned if not isinstance(entry, Skipped)]
    skipped = [entry for entry in scanned if isinstance(entry, Skipped)]
    results: list[IngestResult] = []
    chunks = 0

    async def send(batch: list[tuple[str, Path]]) -> list[IngestResult]:
        documents = [
            Document(doc_id=doc_id, source=str(file), content=file.read_bytes())
            for doc_id, file in batch
        ]
        return await gateway.ingest(documents, collection=collection, timeout=INGEST_TIMEOUT_S)

    def done(replies: list[IngestResult]) -> None:
        nonlocal chunks
        results.extend(replies)
        chunks += sum(r.chunks_written for r in replies)
        _progress(out, len(results), len(found), chunks)

    # Batches in order, INGEST_IN_FLIGHT at once; the first error stops the rest.
    in_flight: deque[asyncio.Task[list[IngestResult]]] = deque()
    try:
        for start in range(0, len(found), INGEST_BATCH):
            in_flight.append(asyncio.create_task(send(found[start : start + INGEST_BATCH])))
            if len(in_flight) >= INGEST_IN_FLIGHT:
                done(await in_flight.popleft())
        while in_flight:
            done(await in_flight.popleft())
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    out.write("\n")
    summary = dict.fromkeys(IngestStatus, 0)
    for r in results:
        summary[r.status] += 1
        if r.status == IngestStatus.FAILED:
            out.write(f"  failed {r.doc_id}: {r.error}\n")
    for s in skipped:
        out.write(f"  skipped {s.path}: {s.reason}\n")
    out.write(
        f"{summary[IngestStatus.WRITTEN]} written, {summary[IngestStatus.UNCHANGED]} unchanged, "
        f"{summary[IngestStatus.FAILED]} failed, {len(skipped)} skipped; "
        f"{chunks} chunks written\n"
    )
    refused = [IngestResult(str(s.path), IngestStatus.FAILED, error=s.reason) for s in skipped]
    if not found:
        out.write("ragplane: nothing to index in " + ", ".join(map(str, paths)) + "\n")
        return refused
    return results + [r for r, s in zip(refused, skipped, strict=True) if s.named]


def _progress(out, done: int, total: int, chunks: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    out.write(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} documents, {chunks} chunks"
    )
    out.flush()


async def ask(
    gateway: GatewayClient,
    question: str,
    collection: str = "",
    out=sys.stdout,
    *,
    top_k: int = 0,
    mode: SearchMode | None = None,
    tags: Iterable[str] = (),
    max_tokens: int = 0,
) -> tuple[str, list[Citation], Finished]:
    """Prints the streamed answer, then its sources and timings."""
    answer: list[str] = []
    citations: list[Citation] = []
    finished = Finished("stop")
    events = gateway.ask(
        question,
        collection=collection,
        top_k=top_k,
        mode=mode,
        tags=tags,
        max_tokens=max_tokens,
        timeout=ASK_TIMEOUT_S,
    )
    started = False
    async for event in events:
        if not started:
            # Once the gateway answers, so that a refusal is not printed after "A:".
            out.write(f"Q: {question}\nA: ")
            started = True
        if isinstance(event, Citations):
            citations = event.citations
        elif isinstance(event, Finished):
            finished = event
        else:
            answer.append(event.text)
            out.write(event.text)
            out.flush()
    out.write("\n")
    if finished.cut:
        out.write(
            f"[answer cut at the token limit ({finished.usage.completion_tokens} tokens); "
            "raise --max-tokens for the rest]\n"
        )
    if citations:
        out.write("Sources:\n")
        for c in citations:
            where = f"{c.title} — {c.section}" if c.section else c.title
            out.write(f"  [{c.index}] {where} ({c.source})\n")
    t = finished.timings
    abstained = f"abstained: {finished.abstain_reason}, " if finished.abstained else ""
    out.write(
        f"({abstained}embed {t.embed_ms:.0f} ms, "
        f"retrieve {t.retrieve_ms:.0f} ms, first token {t.time_to_first_token_ms:.0f} ms, "
        f"total {t.total_ms:.0f} ms, {finished.usage.completion_tokens} tokens)\n\n"
    )
    return "".join(answer), citations, finished


async def ask_json(gateway: GatewayClient, question: str, out=sys.stdout, **settings) -> None:
    """Prints the whole answer as one JSON object (`ragplane ask --json`)."""
    answer, citations, finished = await gateway.ask_text(
        question, timeout=ASK_TIMEOUT_S, **settings
    )
    reply = {
        "answer": answer,
        "citations": [asdict(c) for c in citations],
        "finish_reason": finished.finish_reason,
        "abstained": finished.abstained,
        "abstain_reason": finished.abstain_reason,
        "unknown_names": list(finished.unknown_names),
        "usage": asdict(finished.usage),
        "timings": asdict(finished.timings),
    }
    out.write(json.dumps(reply, ensure_ascii=False) + "\n")


async def status(layout: stack.StackLayout, out=sys.stdout) -> bool:
    """One line per process: health, pid, restarts by the supervisor, address and model.
    True when all serve."""
    healthy = True
    restarts = stack.restarts(layout)
    supervisor = stack.running_pid(layout, stack.SUPERVISOR)
    out.write(f"{'supervisor':<10} {'RUNNING' if supervisor else 'STOPPED':<12} ")
    out.write(f"pid {supervisor or '-'}\n")
    healthy &= supervisor is not None
    for name in (*layout.stores(), *stack.SERVICES):
        pid = stack.running_pid(layout, name)
        address = layout.address(name)
        if name in stack.STORES:
            accepting = await processes.port_accepts(layout.host, layout.port(name))
            state = "SERVING" if accepting else "UNREACHABLE"
        else:
            state = await processes.health_status(address)
        model = await _model_of(name, address) if state == "SERVING" else ""
        healthy &= state == "SERVING"
        out.write(
            f"{name:<10} {state:<12} pid {pid or '-':<8} restarts {restarts.get(name, 0):<3} "
            f"{address:<22} {model}\n"
        )
    return healthy


async def _model_of(name: str, address: str) -> str:
    async with open_channel(address) as channel:
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
    """A channel to the stack's gateway whose calls carry the API key (api_key_for)."""
    key = api_key_for()
    return open_channel(
        layout.address("gateway"), interceptors=api_key_interceptors(key) if key else ()
    )


async def _main(args: argparse.Namespace) -> int:
    if args.command in GATEWAY_COMMANDS:
        # A remote gateway needs no local state dir: the layout is only read without one.
        return await _gateway_command(args)
    if args.command == "keys":
        return keys_cli.run(args)
    layout = layout_from_env()
    if args.command == "up":
        await stack.up(layout)
        return 0
    if args.command == "down":
        stack.down(layout)
        return 0
    if args.command == "status":
        return 0 if await status(layout) else 1
    return 2


def gateway_client(args: argparse.Namespace) -> GatewayClient:
    """--http URL, else --gateway HOST:PORT, else RAGPLANE_GATEWAY, else the local stack's;
    TLS with --tls or --ca, a client certificate with --cert and --key."""
    ca = args.ca or env_str("RAGPLANE_GATEWAY_CA", "") or None
    cert = args.cert or env_str("RAGPLANE_GATEWAY_CLIENT_CERT", "")
    key = args.key or env_str("RAGPLANE_GATEWAY_CLIENT_KEY", "")
    if bool(cert) != bool(key):
        raise SystemExit("ragplane: --cert and --key go together")
    client_cert = (cert, key) if cert else None
    if args.http:
        return HttpClient(args.http, ca=ca, client_cert=client_cert, api_key=args.api_key)
    target = args.gateway or env_str("RAGPLANE_GATEWAY", "")
    return GrpcClient(
        target or layout_from_env().address("gateway"),
        tls=args.tls,
        ca=ca,
        client_cert=client_cert,
        api_key=args.api_key,
    )


async def _gateway_command(args: argparse.Namespace) -> int:
    try:
        gateway = gateway_client(args)
    except (OSError, ssl.SSLError) as exc:
        sys.stderr.write(f"ragplane: cannot read the TLS files: {exc}\n")
        return 1
    try:
        async with gateway:
            return await _call_gateway(gateway, args)
    except GatewayError as exc:
        if exc.unreachable:
            sys.stderr.write(
                f"ragplane: no gateway at {gateway.address}: start the stack with "
                "`ragplane up`, or pass --gateway\n"
            )
        else:
            sys.stderr.write(f"ragplane: {exc.code}: {exc.message}\n")
        return 1


async def _call_gateway(gateway: GatewayClient, args: argparse.Namespace) -> int:
    if args.command in ("sync", "jobs") or (args.command == "ingest" and args.job):
        from ragplane.ops import jobs_cli  # it imports this module

        if args.command == "jobs":
            return await jobs_cli.jobs_command(gateway, args.action, args.job_id)
        job = await jobs_cli.run_job(
            gateway,
            args.paths,
            args.collection,
            delete_missing=args.command == "sync" and args.delete_missing,
            doc_id_prefix=getattr(args, "prefix", ""),
            wait=not args.no_wait,
        )
        return 0 if job is not None and job.status != "failed" and not job.counts.failed else 1
    if args.command == "ingest":
        results = await ingest(gateway, args.paths, args.collection)
        return 1 if not results or any(r.status == IngestStatus.FAILED for r in results) else 0
    if args.command == "collections":
        await collections(gateway, args.action, args.name, args.description)
        return 0
    if args.command == "documents":
        await documents(gateway, args.name or args.collection)
        return 0
    if args.command == "ask":
        settings = {
            "collection": args.collection,
            "top_k": args.top_k,
            "mode": args.mode,
            "tags": args.tag,
            "max_tokens": args.max_tokens,
        }
        if args.json:
            await ask_json(gateway, args.question, **settings)
        else:
            await ask(gateway, args.question, **settings)
        return 0
    deleted = await gateway.delete(args.doc_id, args.collection)
    if not deleted:
        where = repr(args.collection) if args.collection else "the default collection"
        sys.stderr.write(f"ragplane: no document {args.doc_id!r} in {where}\n")
        return 1
    print(f"deleted {deleted} chunks of {args.doc_id}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragplane", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up",
        help="start Milvus Lite and the four services on loopback, under a supervisor "
        "that restarts any that dies",
    )
    sub.add_parser("down", help="stop the supervisor and everything it started")
    sub.add_parser("status", help="health, pid, restarts, address and model of each process")
    keys_cli.add_parser(sub)
    for name, helptext in GATEWAY_COMMANDS.items():
        cmd = sub.add_parser(name, help=helptext)
        where = cmd.add_mutually_exclusive_group()
        where.add_argument(
            "--gateway",
            metavar="HOST:PORT",
            help="the gateway's gRPC address (default: $RAGPLANE_GATEWAY, else the local stack)",
        )
        where.add_argument(
            "--http", metavar="URL", help="use the gateway's HTTP API at URL instead of gRPC"
        )
        cmd.add_argument(
            "--tls",
            action="store_true",
            help="TLS to the gateway's gRPC port, trusting the system's CAs (https URLs do TLS)",
        )
        cmd.add_argument(
            "--ca",
            metavar="FILE",
            help="trust this CA certificate for the gateway's TLS (default: $RAGPLANE_GATEWAY_CA)",
        )
        cmd.add_argument(
            "--cert",
            metavar="FILE",
            help="client certificate, for a gateway that asks for one (with --key; default: "
            "$RAGPLANE_GATEWAY_CLIENT_CERT)",
        )
        cmd.add_argument(
            "--key",
            metavar="FILE",
            help="the client certificate's key (default: $RAGPLANE_GATEWAY_CLIENT_KEY)",
        )
        cmd.add_argument(
            "--api-key",
            metavar="KEY",
            help="the gateway API key (default: $RAGPLANE_API_KEY, else the one `ragplane up` "
            "wrote to the state dir)",
        )
        cmd.add_argument("--collection", default="", help="collection (gateway default if empty)")
        if name in ("ingest", "sync"):
            cmd.add_argument("paths", nargs="+", type=Path)
            cmd.add_argument(
                "--no-wait", action="store_true", help="job: return once the job is accepted"
            )
        if name == "ingest":
            cmd.add_argument(
                "--job",
                action="store_true",
                help="as an ingestion job, with a progress bar (any number of files)",
            )
        elif name == "sync":
            cmd.add_argument(
                "--delete-missing",
                action="store_true",
                help="delete the collection's documents that the folder no longer has",
            )
            cmd.add_argument(
                "--prefix", default="", help="with --delete-missing: only doc_ids under it"
            )
        elif name == "jobs":
            cmd.add_argument(
                "action", nargs="?", default="list", choices=["list", "show", "watch", "cancel"]
            )
            cmd.add_argument("job_id", nargs="?", default="", help="the job (not for list)")
        if name in ("ingest", "sync", "jobs"):
            pass
        elif name == "ask":
            cmd.add_argument("question")
            cmd.add_argument("--top-k", type=_count, default=0, help="chunks to retrieve")
            cmd.add_argument("--mode", choices=list(MODES), help="search mode (gateway default)")
            cmd.add_argument(
                "--tag",
                action="append",
                default=[],
                help="only documents with this tag (repeatable: any of them)",
            )
            cmd.add_argument("--max-tokens", type=_count, default=0, help="answer length limit")
            cmd.add_argument(
                "--json",
                action="store_true",
                help="print one JSON object: answer, citations, finish_reason, abstained, ...",
            )
        elif name == "collections":
            cmd.add_argument(
                "action", nargs="?", default="list", choices=["list", "create", "describe", "drop"]
            )
            cmd.add_argument("name", nargs="?", default="", help="the collection (not for list)")
            cmd.add_argument("--description", default="", help="create: what it holds")
        elif name == "documents":
            cmd.add_argument("name", nargs="?", default="", help="collection (gateway default)")
        else:
            cmd.add_argument("doc_id")
    return p


async def collections(
    gateway: GatewayClient, action: str, name: str, description: str = "", out=sys.stdout
) -> None:
    """`ragplane collections [list | create NAME | describe [NAME] | drop NAME]`."""
    if action in ("create", "drop") and not name:
        raise GatewayError("INVALID_ARGUMENT", f"name the collection to {action}")
    if action == "create":
        found = [await gateway.create_collection(name, description)]
    elif action == "describe":
        found = [await gateway.describe_collection(name)]
    elif action == "drop":
        await gateway.drop_collection(name)
        out.write(f"dropped {name}\n")
        return
    else:
        found = await gateway.collections()
    for c in found:
        about = f"  {c.description}" if c.description else ""
        out.write(
            f"{c.name:<24} {c.document_count:>6} documents {c.chunk_count:>7} chunks  "
            f"{c.embedding_model} ({c.dimension}-d){about}\n"
        )


async def documents(gateway: GatewayClient, collection: str, out=sys.stdout) -> None:
    """Every document of a collection, a page at a time: id, chunks, tags, title."""
    token = ""
    while True:
        page, token = await gateway.documents(collection, page_size=500, page_token=token)
        for d in page:
            tags = f"  [{', '.join(d.tags)}]" if d.tags else ""
            out.write(f"{d.doc_id:<48} {d.chunk_count:>5} chunks  {d.title}{tags}\n")
        if not token:
            return


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw} is negative")
    return value


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = asyncio.run(_main(args))
    except grpc.aio.AioRpcError as exc:
        sys.stderr.write(f"ragplane: {exc.code().name}: {exc.details()}\n")
        code = 1
    except processes.StartError as exc:
        sys.stderr.write(f"ragplane: {exc}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
