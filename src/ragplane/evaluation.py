"""`ragplane eval`: retrieval and answer quality of a running stack on a questions file.

Ranking metrics are at document level (a chunk's document counts once, at its best
rank), from the retriever's top candidates; answers come from the gateway exactly as a
product backend would get them.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ragplane.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)

MODES = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}
RANK_DEPTH = 10
TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    relevant: frozenset[str]
    answer_phrase: str
    answerable: bool
    kind: str


def load_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            questions.append(
                Question(
                    q["id"],
                    q["question"],
                    frozenset(q["relevant_doc_ids"]),
                    q.get("answer_phrase", ""),
                    q["answerable"],
                    q.get("kind", ""),
                )
            )
    return questions


def ranked_documents(hits: list[common_pb2.ScoredChunk]) -> list[str]:
    """Document ids in order of their best chunk."""
    seen: list[str] = []
    for hit in hits:
        if hit.chunk.doc_id not in seen:
            seen.append(hit.chunk.doc_id)
    return seen


def recall_at(ranked: list[str], relevant: frozenset[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranked: list[str], relevant: frozenset[str], k: int = RANK_DEPTH) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


def ndcg_at(ranked: list[str], relevant: frozenset[str], k: int = RANK_DEPTH) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def says_it_does_not_know(answer: str, finished: gateway_pb2.AskFinished) -> bool:
    lowered = answer.lower()
    return finished.abstained or "don't know" in lowered or "do not know" in lowered


class Evaluator:
    def __init__(self, channels: dict[str, grpc.aio.Channel], collection: str) -> None:
        self._embedder = embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"])
        self._retriever = retriever_pb2_grpc.RetrieverServiceStub(channels["retriever"])
        self._gateway = gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])
        self._collection = collection

    async def rank(self, question: str, mode: int) -> tuple[list[str], float]:
        """Documents in rank order, and the best query-chunk relevance among the hits."""
        embedded = await self._embedder.Embed(
            embedder_pb2.EmbedRequest(texts=[question]), timeout=TIMEOUT_S
        )
        found = await self._retriever.Search(
            retriever_pb2.SearchRequest(
                collection=self._collection,
                model=embedded.model,
                query_vector=embedded.embeddings[0].values,
                query_text=question,
                mode=mode,
                top_k=RANK_DEPTH * 3,  # several chunks of one document share a rank
            ),
            timeout=TIMEOUT_S,
        )
        best = max((h.relevance for h in found.hits), default=0.0)
        return ranked_documents(list(found.hits)), best

    async def answer(self, question: str, mode: int) -> gateway_pb2.AskUnaryResponse:
        return await self._gateway.AskUnary(
            gateway_pb2.AskUnaryRequest(
                request=gateway_pb2.AskRequest(
                    collection=self._collection, question=question, mode=mode
                )
            ),
            timeout=TIMEOUT_S,
        )

    async def evaluate(
        self, questions: list[Question], modes: list[str], k: int, answers: bool, out=sys.stderr
    ) -> dict[str, Any]:
        report: dict[str, Any] = {"questions": len(questions), "k": k, "modes": {}}
        for name in modes:
            started = time.perf_counter()
            rows = []
            for i, q in enumerate(questions):
                out.write(f"\r  {name}: {i + 1}/{len(questions)}")
                out.flush()
                rows.append(await self._one(q, MODES[name], k, answers))
            out.write("\n")
            report["modes"][name] = summarize(rows, answers)
            report["modes"][name]["seconds"] = round(time.perf_counter() - started, 1)
        return report

    async def _one(self, q: Question, mode: int, k: int, answers: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"id": q.id, "kind": q.kind, "answerable": q.answerable}
        ranked, row["best_relevance"] = await self.rank(q.question, mode)
        if q.answerable:
            row["recall"] = recall_at(ranked, q.relevant, k)
            row["rr"] = reciprocal_rank(ranked, q.relevant)
            row["ndcg"] = ndcg_at(ranked, q.relevant)
        if answers:
            reply = await self.answer(q.question, mode)
            row["abstained"] = says_it_does_not_know(reply.answer, reply.finished)
            row["correct"] = q.answerable and q.answer_phrase.lower() in reply.answer.lower()
            t = reply.finished.timings
            row["timings"] = {
                "embed_ms": t.embed_ms,
                "retrieve_ms": t.retrieve_ms,
                "prompt_ms": t.prompt_ms,
                "time_to_first_token_ms": t.time_to_first_token_ms,
                "total_ms": t.total_ms,
            }
        return row


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def summarize(rows: list[dict[str, Any]], answers: bool) -> dict[str, Any]:
    answerable = [r for r in rows if r["answerable"]]
    summary: dict[str, Any] = {
        "recall@k": _mean([r["recall"] for r in answerable]),
        "mrr@10": _mean([r["rr"] for r in answerable]),
        "ndcg@10": _mean([r["ndcg"] for r in answerable]),
        "by_kind": {
            kind: {
                "questions": len(group),
                "recall@k": _mean([r["recall"] for r in group]),
                "mrr@10": _mean([r["rr"] for r in group]),
            }
            for kind in sorted({r["kind"] for r in answerable})
            for group in [[r for r in answerable if r["kind"] == kind]]
        },
    }
    unanswerable = [r for r in rows if not r["answerable"]]
    summary["relevance_threshold_sweep"] = sweep(answerable, unanswerable)
    if answers:
        summary["answer_accuracy"] = _mean([float(r["correct"]) for r in answerable])
        summary["false_abstention_rate"] = _mean([float(r["abstained"]) for r in answerable])
        summary["abstention_accuracy"] = _mean([float(r["abstained"]) for r in unanswerable])
        summary["latency_ms_p50"] = {
            stage: round(statistics.median(r["timings"][stage] for r in rows), 1)
            for stage in rows[0]["timings"]
        }
    return summary


def sweep(answerable: list[dict[str, Any]], unanswerable: list[dict[str, Any]]) -> list[dict]:
    """For each threshold on the best hit's relevance: how many unanswerable questions it
    turns away (abstention) and how many answerable ones it wrongly turns away."""
    rows = []
    for step in range(10, 71, 5):
        t = step / 100
        rows.append(
            {
                "threshold": t,
                "abstention_accuracy": _mean(
                    [float(r["best_relevance"] < t) for r in unanswerable]
                ),
                "false_abstention_rate": _mean(
                    [float(r["best_relevance"] < t) for r in answerable]
                ),
            }
        )
    return rows


def format_table(report: dict[str, Any]) -> str:
    k = report["k"]
    columns = [f"recall@{k}", "MRR@10", "nDCG@10", "answer acc.", "abstention acc.", "false abst."]
    keys = [
        "recall@k",
        "mrr@10",
        "ndcg@10",
        "answer_accuracy",
        "abstention_accuracy",
        "false_abstention_rate",
    ]
    lines = ["| mode | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for mode, s in report["modes"].items():
        cells = [f"{s[key]:.3f}" if key in s else "-" for key in keys]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
