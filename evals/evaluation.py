"""`ragplane eval`: retrieval and answer quality of a running stack on a questions file.

Ranking metrics are at document level (a chunk's document counts once, at its best
rank), from the retriever's top candidates; answers come from the gateway exactly as a
product backend would get them.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc


@dataclass(frozen=True)
class Mode:
    """One retrieval configuration the evaluation compares."""

    search: common_pb2.SearchMode
    rerank: common_pb2.RerankMode = common_pb2.RERANK_MODE_OFF
    fusion: common_pb2.Fusion | None = None
    identifier_boost: common_pb2.IdentifierBoost = common_pb2.IDENTIFIER_BOOST_UNSPECIFIED

    def ask_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "mode": self.search,
            "rerank": common_pb2.Rerank(mode=self.rerank),
            "identifier_boost": self.identifier_boost,
        }
        if self.fusion is not None:
            fields["fusion"] = self.fusion
        return fields


MODES = {
    "dense": Mode(common_pb2.SEARCH_MODE_DENSE),
    "keyword": Mode(common_pb2.SEARCH_MODE_KEYWORD),
    "hybrid": Mode(common_pb2.SEARCH_MODE_HYBRID),
    # The modes above with the retriever's identifier boost off.
    "keyword-no-boost": Mode(
        common_pb2.SEARCH_MODE_KEYWORD, identifier_boost=common_pb2.IDENTIFIER_BOOST_OFF
    ),
    "hybrid-no-boost": Mode(
        common_pb2.SEARCH_MODE_HYBRID, identifier_boost=common_pb2.IDENTIFIER_BOOST_OFF
    ),
    "hybrid-weighted": Mode(
        common_pb2.SEARCH_MODE_HYBRID,
        fusion=common_pb2.Fusion(method=common_pb2.FUSION_METHOD_WEIGHTED),
    ),
    "dense+rerank": Mode(common_pb2.SEARCH_MODE_DENSE, common_pb2.RERANK_MODE_ON),
    "hybrid+rerank": Mode(common_pb2.SEARCH_MODE_HYBRID, common_pb2.RERANK_MODE_ON),
    # Hybrid with reciprocal rank fusion chosen by the request, whatever the server's
    # default fusion (the default before query-adaptive fusion).
    "hybrid-rrf": Mode(
        common_pb2.SEARCH_MODE_HYBRID,
        fusion=common_pb2.Fusion(method=common_pb2.FUSION_METHOD_RRF),
    ),
    # Everything the gateway's and retriever's defaults choose.
    "default": Mode(common_pb2.SEARCH_MODE_UNSPECIFIED, common_pb2.RERANK_MODE_UNSPECIFIED),
}
# hybrid-weighted-D: weighted fusion with dense weight D and keyword weight 1 - D.
WEIGHTED_PREFIX = "hybrid-weighted-"


def mode_named(name: str) -> Mode | None:
    """A mode of MODES, or a hybrid-weighted-D one (0 <= D <= 1); None if neither."""
    if name in MODES:
        return MODES[name]
    if not name.startswith(WEIGHTED_PREFIX):
        return None
    try:
        dense = float(name.removeprefix(WEIGHTED_PREFIX))
    except ValueError:
        return None
    if not 0.0 <= dense <= 1.0:
        return None
    fusion = common_pb2.Fusion(
        method=common_pb2.FUSION_METHOD_WEIGHTED,
        dense_weight=dense,
        keyword_weight=round(1.0 - dense, 6),
    )
    return Mode(common_pb2.SEARCH_MODE_HYBRID, fusion=fusion)


DEFAULT_MODES = "dense,keyword,hybrid,hybrid+rerank"


def mode_of(name: str) -> Mode:
    mode = mode_named(name)
    if mode is None:
        raise KeyError(name)
    return mode


RANK_DEPTH = 10
# Chunks fetched per question (several chunks of one document share its rank); with
# reranking, also the candidates the reranker rescores.
CANDIDATES = 20
# The hits the names check reads: 0, the gateway's default top_k, the chunks an Ask gives
# the model, so the sweep applies the same check to the same hits.
CONTEXT_HITS = 0
TIMEOUT_S = 180.0

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Corpus:
    """An evaluation set: documents, their questions, and where they are indexed."""

    documents: Path
    questions: Path
    collection: str
    # The Debian package that installs the documents, if any.
    debian_package: str = ""


CORPORA = {
    "handbook": Corpus(
        ROOT / "samples" / "handbook", ROOT / "samples" / "handbook-questions.jsonl", "handbook"
    ),
    "postgres": Corpus(
        Path("/usr/share/doc/postgresql-doc-15/html"),
        ROOT / "samples" / "postgres-questions.jsonl",
        "postgres15",
        "postgresql-doc-15",
    ),
}


def ensure_documents(corpus: Corpus, install: bool, out=sys.stderr) -> None:
    """The corpus' documents on disk, installed from Debian when asked to."""
    if corpus.documents.is_dir():
        return
    if not corpus.debian_package:
        raise SystemExit(f"ragplane: {corpus.documents} does not exist")
    command = ["apt-get", "install", "-y", "-q", corpus.debian_package]
    if not install:
        raise SystemExit(
            f"ragplane: {corpus.documents} is missing; install it with "
            f"`{' '.join(command)}` or pass --install"
        )
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise SystemExit(f"ragplane: installing {corpus.debian_package} needs root")
        command.insert(0, "sudo")
    out.write(f"installing {corpus.debian_package}: {' '.join(command)}\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env).returncode != 0:
        # A fresh machine may have no package lists yet.
        update = command[: command.index("apt-get")] + ["apt-get", "update", "-q"]
        subprocess.run(update, env=env, check=True)
        subprocess.run(command, env=env, check=True)
    if not corpus.documents.is_dir():
        raise SystemExit(f"ragplane: {corpus.debian_package} did not install {corpus.documents}")


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


def answer_fields(reply: gateway_pb2.AskUnaryResponse, relevant: frozenset[str]) -> dict:
    """What an answer says beside its text: whether the generator wrote it (not the
    gateway's abstention), how it ended, its [n] markers and whether one of them points at
    a relevant document, and its decoding rate."""
    f = reply.finished
    by_index = {c.index: c.doc_id for c in reply.citations}
    cited = list(f.cited_indexes)
    tokens = f.usage.completion_tokens
    decode_s = (f.timings.generate_ms - f.timings.time_to_first_token_ms) / 1000
    return {
        "answer": reply.answer,
        "generated": not f.abstained,
        "finish_reason": common_pb2.FinishReason.Name(f.finish_reason),
        "completion_tokens": tokens,
        "tokens_per_s": round((tokens - 1) / decode_s, 2) if tokens > 1 and decode_s > 0 else None,
        "cited": cited,
        "invalid_citations": list(f.invalid_citations),
        "cited_relevant": any(by_index.get(i) in relevant for i in cited),
        # The markers the gateway added (attribution), and which of them point at a
        # relevant document.
        "attributed": list(f.attributed_indexes),
        "attributed_relevant": [by_index.get(i) in relevant for i in f.attributed_indexes],
    }


class Evaluator:
    """Drives only the gateway's public API: Search for rankings and the names check,
    AskUnary for answers. Nothing of the gateway is copied here."""

    def __init__(self, gateway: grpc.aio.Channel, collection: str) -> None:
        self._gateway = gateway_pb2_grpc.GatewayServiceStub(gateway)
        self._collection = collection

    async def rank(
        self, question: str, mode: Mode
    ) -> tuple[gateway_pb2.GatewayServiceSearchResponse, float, dict[str, float]]:
        """The gateway's search (hits in rank order, the names the corpus lacks), the best
        query-chunk relevance among the hits, and the time each retrieval stage took."""
        found = await self._gateway.Search(
            gateway_pb2.GatewayServiceSearchRequest(
                collection=self._collection,
                query=question,
                top_k=CANDIDATES,
                context_top_k=CONTEXT_HITS,
                **mode.ask_fields(),
            ),
            timeout=TIMEOUT_S,
        )
        best = max((h.relevance for h in found.hits), default=0.0)
        t = found.timings
        timings = {
            "embed_ms": t.embed_ms,
            "search_ms": t.retrieve_ms - t.rerank_ms,
            "rerank_ms": t.rerank_ms,
        }
        return found, best, timings

    async def check_modes(self, question: str, modes: list[str]) -> None:
        """Fails fast, before minutes of work, when the stack cannot run a mode (reranking
        without a reranker)."""
        for name in modes:
            try:
                await self.rank(question, mode_of(name))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                raise SystemExit(
                    f"ragplane: mode {name} cannot run on this stack: {exc.details()}; start "
                    "it with RAGPLANE_RERANKER=causal-lm (or a cross-encoder), or leave "
                    f"{name} out of --modes"
                ) from None

    async def answer(self, question: str, mode: Mode) -> gateway_pb2.AskUnaryResponse:
        return await self._gateway.AskUnary(
            gateway_pb2.AskUnaryRequest(
                request=gateway_pb2.AskRequest(
                    collection=self._collection, question=question, **mode.ask_fields()
                )
            ),
            timeout=TIMEOUT_S,
        )

    async def evaluate(
        self,
        questions: list[Question],
        modes: list[str],
        k: int,
        answers: bool | set[str],
        out=sys.stderr,
    ) -> dict[str, Any]:
        """Every mode's metrics; `answers` is True, False or the modes to get answers in."""
        report: dict[str, Any] = {"questions": len(questions), "k": k, "modes": {}}
        for name in modes:
            started = time.perf_counter()
            rows = []
            for i, q in enumerate(questions):
                out.write(f"\r  {name}: {i + 1}/{len(questions)}")
                out.flush()
                answer = name in answers if isinstance(answers, set) else answers
                rows.append(await self._one(q, mode_of(name), k, answer))
            out.write("\n")
            report["modes"][name] = summarize(rows, any("abstained" in r for r in rows))
            report["modes"][name]["seconds"] = round(time.perf_counter() - started, 1)
            report.setdefault("per_question", {})[name] = rows
        if "dense" in report.get("per_question", {}):
            report["against_dense"] = paired_differences(report["per_question"])
        return report

    async def _one(self, q: Question, mode: Mode, k: int, answers: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"id": q.id, "kind": q.kind, "answerable": q.answerable}
        found, row["best_relevance"], row["retrieval_timings"] = await self.rank(q.question, mode)
        ranked = ranked_documents(list(found.hits))
        row["ranked"] = ranked[:RANK_DEPTH]
        # The gateway's names check: names the prompt's chunks miss that the corpus lacks too.
        row["missing_names"] = list(found.unknown_names)
        if q.answerable:
            row["recall"] = recall_at(ranked, q.relevant, k)
            row["rr"] = reciprocal_rank(ranked, q.relevant)
            row["ndcg"] = ndcg_at(ranked, q.relevant)
        if answers:
            try:
                reply = await self.answer(q.question, mode)
            except grpc.aio.AioRpcError as exc:
                # A failed answer (a deadline on a loaded machine, say) counts as wrong
                # and is reported; it does not end the evaluation.
                row["answer_error"] = f"{exc.code().name}: {exc.details()}"
                row["abstained"] = row["correct"] = row["cited_relevant"] = False
                return row
            row["abstained"] = says_it_does_not_know(reply.answer, reply.finished)
            row["correct"] = q.answerable and q.answer_phrase.lower() in reply.answer.lower()
            t = reply.finished.timings
            row["timings"] = {
                "embed_ms": t.embed_ms,
                "retrieve_ms": t.retrieve_ms,
                "rerank_ms": t.rerank_ms,
                "prompt_ms": t.prompt_ms,
                "time_to_first_token_ms": t.time_to_first_token_ms,
                "total_ms": t.total_ms,
            }
            row.update(answer_fields(reply, q.relevant))
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
                "ndcg@10": _mean([r["ndcg"] for r in group]),
            }
            for kind in sorted({r["kind"] for r in answerable})
            for group in [[r for r in answerable if r["kind"] == kind]]
        },
    }
    unanswerable = [r for r in rows if not r["answerable"]]
    summary["relevance_threshold_sweep"] = sweep(answerable, unanswerable)
    summary["retrieval_latency_ms_p50"] = {
        stage: round(statistics.median(r["retrieval_timings"][stage] for r in rows), 1)
        for stage in rows[0]["retrieval_timings"]
    }
    if answers:
        summary["answer_accuracy"] = _mean([float(r["correct"]) for r in answerable])
        summary["false_abstention_rate"] = _mean([float(r["abstained"]) for r in answerable])
        summary["abstention_accuracy"] = _mean([float(r["abstained"]) for r in unanswerable])
        summary.update(citation_summary(answerable, rows))
        timed = [r for r in rows if "timings" in r]
        summary["answer_errors"] = len(rows) - len(timed)
        summary["latency_ms_p50"] = {
            stage: round(statistics.median(r["timings"][stage] for r in timed), 1)
            for stage in (timed[0]["timings"] if timed else {})
        }
    return summary


def citation_summary(answerable: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict:
    """Over the answers the generator wrote (not the gateway's abstentions): how many carry
    an [n] marker, how many cite a relevant document (answerable questions), how many have
    a marker that points at no passage, how many were cut at max_tokens; and the median
    decoding rate."""
    written = [r for r in answerable if r.get("generated")]
    every = [r for r in rows if r.get("generated")]
    rates = [r["tokens_per_s"] for r in every if r.get("tokens_per_s")]
    return {
        "generated_answers": len(every),
        "citation_rate": _mean([float(bool(r["cited"])) for r in written]),
        "correct_citation_rate": _mean([float(r["cited_relevant"]) for r in written]),
        "invalid_citation_rate": _mean([float(bool(r["invalid_citations"])) for r in every]),
        # Answers with a marker the gateway added, and the share of added markers that
        # point at a relevant document (answerable questions).
        "attributed_rate": _mean([float(bool(r.get("attributed"))) for r in written]),
        "attributed_precision": _mean(
            [float(hit) for r in written for hit in r.get("attributed_relevant", [])]
        ),
        "cut_rate": _mean([float(r["finish_reason"] == "FINISH_REASON_LENGTH") for r in every]),
        "tokens_per_s_p50": round(statistics.median(rates), 2) if rates else float("nan"),
    }


def sweep(answerable: list[dict[str, Any]], unanswerable: list[dict[str, Any]]) -> list[dict]:
    """For each threshold on the best hit's relevance: how many unanswerable questions it
    turns away (abstention) and how many answerable ones it wrongly turns away, alone and
    with the gateway's names check (the retriever's, services/retriever/names_check.py) on the
    top hits."""

    def turned_away(r: dict[str, Any], t: float, names: bool) -> float:
        return float(r["best_relevance"] < t or (names and bool(r.get("missing_names"))))

    rows = []
    for step in range(10, 71, 5):
        t = step / 100
        row: dict[str, Any] = {"threshold": t}
        for suffix, names in (("", False), ("_with_names_check", True)):
            row["abstention_accuracy" + suffix] = _mean(
                [turned_away(r, t, names) for r in unanswerable]
            )
            row["false_abstention_rate" + suffix] = _mean(
                [turned_away(r, t, names) for r in answerable]
            )
        rows.append(row)
    return rows


RANKING_METRICS = {"recall@k": "recall", "mrr@10": "rr", "ndcg@10": "ndcg"}
# Compared where both sides were answered; an unanswered question counts as not citing.
ANSWER_METRICS = {"answer_accuracy": "correct", "correct_citation": "cited_relevant"}


def paired_differences(
    per_question: dict[str, list[dict[str, Any]]],
    baseline: str = "dense",
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Each mode against the baseline on the same answerable questions: the mean
    difference of every ranking metric (and of answer accuracy and correct citation where
    both modes were answered), its 95 % paired bootstrap interval (questions resampled),
    and on how many questions it does better and worse. An interval that excludes 0 is a
    difference the question set can show; one that spans 0 is not."""
    base = {r["id"]: r for r in per_question[baseline] if r["answerable"]}
    ids = sorted(base)
    result: dict[str, Any] = {}
    for mode, rows in per_question.items():
        by_id = {r["id"]: r for r in rows}
        if mode == baseline or not ids or any(i not in by_id for i in ids):
            continue
        rng = random.Random(seed)
        draws = [[rng.randrange(len(ids)) for _ in ids] for _ in range(resamples)]
        result[mode] = {}
        metrics = dict(RANKING_METRICS)
        for metric, field in ANSWER_METRICS.items():
            if all(field in by_id[i] and field in base[i] for i in ids):
                metrics[metric] = field
        for metric, field in metrics.items():
            deltas = [float(by_id[i][field]) - float(base[i][field]) for i in ids]
            means = sorted(statistics.fmean(deltas[j] for j in draw) for draw in draws)
            result[mode][metric] = {
                "difference": round(statistics.fmean(deltas), 4),
                "ci95": [
                    round(means[int(0.025 * resamples)], 4),
                    round(means[int(0.975 * resamples) - 1], 4),
                ],
                "better": sum(d > 1e-9 for d in deltas),
                "worse": sum(d < -1e-9 for d in deltas),
            }
    return result


def format_differences(report: dict[str, Any]) -> str:
    """The against_dense part of a report as a table: difference [95 % interval]."""
    k = report["k"]
    columns = [f"recall@{k}", "MRR@10", "nDCG@10", "answer acc.", "correct citation"]
    lines = [
        "| mode - dense | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for mode, metrics in report.get("against_dense", {}).items():
        cells = [
            f"{m['difference']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"
            f" ({m['better']} better, {m['worse']} worse)"
            for m in metrics.values()
        ]
        cells += ["-"] * (len(columns) - len(cells))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    k = report["k"]
    columns = [
        f"recall@{k}",
        "MRR@10",
        "nDCG@10",
        "answer acc.",
        "abstention acc.",
        "false abst.",
        "search p50 ms",
        "rerank p50 ms",
    ]
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
        latency = s.get("retrieval_latency_ms_p50", {})
        cells += [f"{latency.get('search_ms', 0):.0f}", f"{latency.get('rerank_ms', 0):.0f}"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
