"""`python -m evals.followups`: does the conversation history help a follow-up question's
retrieval?

Every row of the follow-ups file (samples/handbook-followups.jsonl) is a first user
question (`history`) and a follow-up that only makes sense after it ("and how do I undo
that?"). Each follow-up is asked twice through the gateway's AskUnary, with top_k 5 and
max_tokens 1 (only the citations are read): once with the history (one user Turn per
string, oldest first), once alone. The score is recall@5 at document level over the
citations' doc ids (a document counts once). The report gives the mean recall with and
without history, their paired difference with a 95 % bootstrap interval (rows resampled,
as evals.evaluation.paired_differences does), how many rows got better and worse, and
every row's result; it prints a markdown table and writes JSON.

The corpus must already be indexed in the collection; for the handbook, start the stack
(`ragplane up`) and index it into "handbook" with

    python -m evals --corpus handbook --no-answers --modes dense

(or `ragplane ingest --collection handbook samples/handbook`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from evals import evaluation
from ragplane.channels import open_channel
from ragplane.client import api_key_for, api_key_interceptors
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc

FOLLOWUPS = evaluation.ROOT / "samples" / "handbook-followups.jsonl"
TOP_K = 5
# Only the citations are read; one token keeps the generator's share of each call small.
MAX_TOKENS = 1
CONDITIONS = ("without_history", "with_history")


@dataclass(frozen=True)
class FollowUp:
    id: str
    kind: str
    history: tuple[str, ...]
    question: str
    relevant: frozenset[str]
    answer_phrase: str


def load_followups(path: Path) -> list[FollowUp]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append(
                FollowUp(
                    r["id"],
                    r.get("kind", ""),
                    tuple(r["history"]),
                    r["question"],
                    frozenset(r["relevant_doc_ids"]),
                    r.get("answer_phrase", ""),
                )
            )
    return rows


def cited_documents(citations) -> list[str]:
    """The citations' doc ids in citation order, each document once."""
    seen: list[str] = []
    for c in citations:
        if c.doc_id not in seen:
            seen.append(c.doc_id)
    return seen


def ask_request(
    collection: str, row: FollowUp, with_history: bool, mode: str = ""
) -> gateway_pb2.AskUnaryRequest:
    fields = evaluation.MODES[mode].ask_fields() if mode else {}
    history = (
        [gateway_pb2.Turn(role="user", content=h) for h in row.history] if with_history else []
    )
    return gateway_pb2.AskUnaryRequest(
        request=gateway_pb2.AskRequest(
            collection=collection,
            question=row.question,
            top_k=TOP_K,
            max_tokens=MAX_TOKENS,
            history=history,
            **fields,
        )
    )


async def ask_one(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    collection: str,
    row: FollowUp,
    with_history: bool,
    mode: str,
) -> dict[str, Any]:
    """One condition's result: cited documents, recall@5, reciprocal rank, abstention. A
    failed call counts as recall 0 and is reported."""
    try:
        reply = await gateway.AskUnary(
            ask_request(collection, row, with_history, mode), timeout=evaluation.TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        return {
            "cited": [],
            "recall": 0.0,
            "rr": 0.0,
            "ndcg": 0.0,
            "error": f"{exc.code().name}: {exc.details()}",
        }
    cited = cited_documents(reply.citations)
    result: dict[str, Any] = {
        "cited": cited,
        "recall": evaluation.recall_at(cited, row.relevant, TOP_K),
        "rr": evaluation.reciprocal_rank(cited, row.relevant, TOP_K),
        "ndcg": evaluation.ndcg_at(cited, row.relevant, TOP_K),
    }
    if reply.finished.abstained:
        result["abstained"] = gateway_pb2.AbstainReason.Name(reply.finished.abstain_reason)
    return result


async def check_collection(
    gateway: gateway_pb2_grpc.GatewayServiceStub, collection: str, query: str
) -> None:
    """Fails fast when the collection holds nothing (not indexed yet)."""
    found = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(collection=collection, query=query, top_k=1),
        timeout=evaluation.TIMEOUT_S,
    )
    if not found.hits:
        raise SystemExit(
            f"evals.followups: collection '{collection}' returned nothing; index the corpus "
            "first: python -m evals --corpus handbook --no-answers --modes dense"
        )


async def run(
    channel: grpc.aio.Channel, rows: list[FollowUp], collection: str, mode: str, out=sys.stderr
) -> dict[str, Any]:
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    await check_collection(gateway, collection, rows[0].history[-1])
    started = time.perf_counter()
    per_row = []
    for i, row in enumerate(rows):
        out.write(f"\r  follow-ups: {i + 1}/{len(rows)}")
        out.flush()
        without = await ask_one(gateway, collection, row, False, mode)
        with_ = await ask_one(gateway, collection, row, True, mode)
        per_row.append(
            {
                "id": row.id,
                "kind": row.kind,
                "history": list(row.history),
                "question": row.question,
                "relevant": sorted(row.relevant),
                "without_history": without,
                "with_history": with_,
                "difference": round(with_["recall"] - without["recall"], 4),
            }
        )
    out.write("\n")
    report = summarize(per_row)
    report.update(
        {
            "collection": collection,
            "mode": mode or "gateway default",
            "top_k": TOP_K,
            "seconds": round(time.perf_counter() - started, 1),
            "per_row": per_row,
        }
    )
    return report


def summarize(per_row: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean recall@5 per condition (overall and per kind) and the paired difference."""

    def means(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "rows": len(rows),
            **{
                f"recall@{TOP_K}_{c}": round(statistics.fmean(r[c]["recall"] for r in rows), 4)
                for c in CONDITIONS
            },
        }

    summary: dict[str, Any] = {"rows": len(per_row), **means(per_row)}
    summary["difference"] = paired(per_row)
    kinds = sorted({r["kind"] for r in per_row if r["kind"]})
    if kinds:
        summary["by_kind"] = {}
        for kind in kinds:
            rows = [r for r in per_row if r["kind"] == kind]
            summary["by_kind"][kind] = {**means(rows), "difference": paired(rows)}
    summary["errors"] = sum("error" in r[c] for r in per_row for c in CONDITIONS)
    summary["abstained"] = {c: sum("abstained" in r[c] for r in per_row) for c in CONDITIONS}
    return summary


def paired(per_row: list[dict[str, Any]]) -> dict[str, Any]:
    """with - without history, through evaluation.paired_differences (2000 bootstrap
    resamples of the rows, random.Random(0)): recall@5 and the reciprocal rank of the first
    relevant cited document."""
    per_condition = {
        c: [{"id": r["id"], "answerable": True, **r[c]} for r in per_row] for c in CONDITIONS
    }
    result = evaluation.paired_differences(per_condition, baseline="without_history")
    metrics = result["with_history"]
    return {f"recall@{TOP_K}": metrics["recall@k"], f"mrr@{TOP_K}": metrics["mrr@10"]}


def format_report(report: dict[str, Any]) -> str:
    k = TOP_K
    lines = [
        f"| rows | recall@{k} without history | recall@{k} with history | "
        "with - without [95 % CI] | better | worse |",
        "|---|---|---|---|---|---|",
    ]
    groups = [("all", report)] + list(report.get("by_kind", {}).items())
    for name, s in groups:
        d = s["difference"][f"recall@{k}"]
        lines.append(
            f"| {name} ({s['rows']}) | {s[f'recall@{k}_without_history']:.3f} | "
            f"{s[f'recall@{k}_with_history']:.3f} | {d['difference']:+.3f} "
            f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['better']} | {d['worse']} |"
        )
    lines += [
        "",
        f"| id | kind | relevant | recall@{k} without | recall@{k} with | cited without "
        "| cited with |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["per_row"]:
        w, h = r["without_history"], r["with_history"]
        lines.append(
            f"| {r['id']} | {r['kind']} | {', '.join(r['relevant'])} | {w['recall']:.2f} | "
            f"{h['recall']:.2f} | {_cited(w)} | {_cited(h)} |"
        )
    return "\n".join(lines)


def _cited(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    cited = ", ".join(result["cited"]) or "-"
    return f"{cited} (abstained: {result['abstained']})" if "abstained" in result else cited


async def main_async(args: argparse.Namespace) -> int:
    rows = load_followups(args.followups)
    if not rows:
        raise SystemExit(f"evals.followups: {args.followups} has no rows")
    key = api_key_for()  # $RAGPLANE_API_KEY, else the local stack's
    interceptors = api_key_interceptors(key) if key else []
    async with open_channel(args.gateway, interceptors=interceptors) as channel:
        report = await run(channel, rows, args.collection, args.mode)
    report["followups_file"] = str(args.followups)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"report: {args.out}")
    if report["errors"]:
        sys.stderr.write(f"evals.followups: {report['errors']} calls failed; see the report\n")
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evals.followups",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gateway", default="127.0.0.1:50050", help="gateway gRPC HOST:PORT")
    p.add_argument("--collection", default="handbook")
    p.add_argument("--followups", type=Path, default=FOLLOWUPS, help="JSON lines file")
    p.add_argument(
        "--mode",
        default="",
        choices=list(evaluation.MODES),
        help="retrieval mode of evals.evaluation.MODES (default: the gateway's)",
    )
    p.add_argument("--out", type=Path, default=Path("docs/eval-followups.json"))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = asyncio.run(main_async(args))
    except grpc.aio.AioRpcError as exc:
        sys.stderr.write(f"evals.followups: {exc.code().name}: {exc.details()}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
