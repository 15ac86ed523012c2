"""The retriever's reranker: rescores the top-N fused candidates so the best K come first.

Backends (RAGPLANE_RERANKER):
- cross-encoder: any Hugging Face sequence-classification reranker (ms-marco-MiniLM-L-6-v2,
  bge-reranker-base, ...), pinned like the embedder (id, revision, weights sha256) and
  loaded from a local folder or the hub cache. What production runs.
- causal-lm: pointwise query likelihood with a causal LM (the mean log-probability of the
  question given the passage, as in UPR, Sachan et al. 2022). By default the SmolLM2
  weights the generator already ships, so it works offline on one machine.
- none.

Scoring is blocking torch work: it runs on one dedicated thread, one batch at a time, so
the event loop keeps serving and concurrent searches queue instead of thrashing the CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ragplane import models
from ragplane.config import env_bool, env_choice, env_float, env_int, env_str
from ragplane.errors import ConfigError
from ragplane.models import SMOLLM2, ModelPin, ResolvedModel

log = logging.getLogger(__name__)

BACKENDS = ("none", "cross-encoder", "causal-lm")
MAX_CANDIDATES = 200
# The causal-LM prompt; the question's tokens are scored after it.
QL_PREFIX = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"


@dataclass(frozen=True)
class RerankerSettings:
    backend: str
    # A model folder, "hub" (the Hugging Face cache, by id and revision), or "" for the
    # causal-lm backend's shipped SmolLM2.
    source: str
    model_id: str
    revision: str
    weights_sha256: str
    # Whether requests that do not say are reranked, and with how many candidates.
    default_on: bool
    default_candidates: int
    # Weight of the reranker's order against the retrieval order (1: reranker alone).
    default_weight: float
    max_passage_tokens: int
    batch_size: int

    @classmethod
    def from_env(cls) -> RerankerSettings:
        backend = env_choice("RAGPLANE_RERANKER", "none", BACKENDS)
        settings = cls(
            backend=backend,
            source=env_str("RAGPLANE_RERANKER_MODEL_SOURCE", ""),
            model_id=env_str("RAGPLANE_RERANKER_MODEL_ID", ""),
            revision=env_str("RAGPLANE_RERANKER_MODEL_REVISION", ""),
            weights_sha256=env_str("RAGPLANE_RERANKER_WEIGHTS_SHA256", ""),
            default_on=env_bool("RAGPLANE_RERANK_BY_DEFAULT", backend != "none"),
            default_candidates=env_int(
                "RAGPLANE_RERANK_CANDIDATES", 20, minimum=1, maximum=MAX_CANDIDATES
            ),
            # The causal LM's weight was measured (docs/retrieval.md): 0.2 is the one
            # weight at which its order helps on both evaluation sets. A cross-encoder's
            # could not be measured here; 0.5 hedges.
            default_weight=env_float(
                "RAGPLANE_RERANK_WEIGHT", 0.2 if backend == "causal-lm" else 0.5, minimum=0.0
            ),
            max_passage_tokens=env_int("RAGPLANE_RERANK_MAX_PASSAGE_TOKENS", 256, minimum=16),
            batch_size=env_int("RAGPLANE_RERANK_BATCH_SIZE", 8, minimum=1, maximum=256),
        )
        if settings.default_weight > 1.0:
            raise ConfigError(
                f"RAGPLANE_RERANK_WEIGHT={settings.default_weight} must be between 0 and 1"
            )
        if backend == "cross-encoder" and not (
            settings.source and settings.model_id and settings.weights_sha256
        ):
            raise ConfigError(
                "RAGPLANE_RERANKER=cross-encoder needs RAGPLANE_RERANKER_MODEL_SOURCE (a folder "
                "or 'hub'), RAGPLANE_RERANKER_MODEL_ID and RAGPLANE_RERANKER_WEIGHTS_SHA256"
            )
        if backend == "causal-lm" and settings.source and not settings.weights_sha256:
            raise ConfigError(
                "RAGPLANE_RERANKER_MODEL_SOURCE is set, so RAGPLANE_RERANKER_WEIGHTS_SHA256 "
                "must pin its weights"
            )
        return settings

    def pin(self) -> ModelPin:
        """The model these settings pin; the causal-lm backend without a source runs the
        SmolLM2 the generator ships."""
        if self.backend == "causal-lm" and not self.source:
            return SMOLLM2
        return ModelPin(
            id=self.model_id,
            revision=self.revision,
            weights_sha256=self.weights_sha256,
            source=self.source,
            source_variable="RAGPLANE_RERANKER_MODEL_SOURCE",
            sha256_variable="RAGPLANE_RERANKER_WEIGHTS_SHA256",
        )


def rerank_order(scores: Sequence[float], weight: float, k: int = 60) -> list[int]:
    """Candidate indices in final order. The candidates come in retrieval order; with
    weight 1 the reranker's scores alone decide, below 1 each candidate scores
    (1 - weight) / (k + retrieval rank) + weight / (k + reranker rank): a weak reranker
    then refines the order instead of overturning it. Ties keep the retrieval order."""
    by_score = sorted(range(len(scores)), key=lambda i: -scores[i])
    if weight >= 1.0:
        return by_score
    reranked = {i: rank for rank, i in enumerate(by_score)}
    return sorted(
        range(len(scores)),
        key=lambda i: -((1 - weight) / (k + i + 1) + weight / (k + reranked[i] + 1)),
    )


class Scorer(Protocol):
    """Blocking relevance scores of passages for one query (higher is more relevant)."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


def resolve(settings: RerankerSettings) -> ResolvedModel:
    """The reranker's model folder, its weights checked against the pin. Blocking."""
    return models.resolve(settings.pin())


class CrossEncoderScorer:
    """A sequence-classification model over (query, passage) pairs."""

    def __init__(self, folder: Path, max_tokens: int, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        limit = getattr(self._model.config, "max_position_embeddings", 512)
        self._max_tokens = min(max_tokens + 64, limit, 512)
        self._batch_size = batch_size

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(passages), self._batch_size):
            batch = list(passages[start : start + self._batch_size])
            encoded = self._tokenizer(
                [query] * len(batch),
                batch,
                truncation="longest_first",
                max_length=self._max_tokens,
                padding=True,
                return_tensors="pt",
            )
            with self._torch.inference_mode():
                logits = self._model(**encoded).logits.float()
            # One logit (ms-marco, bge) is the score; with two labels, "relevant" is the
            # last, scored as its log-probability.
            column = logits[:, 0] if logits.shape[-1] == 1 else logits.log_softmax(-1)[:, -1]
            scores.extend(column.tolist())
        return scores


class QueryLikelihoodScorer:
    """Mean log P(question tokens | passage prompt) under a causal LM."""

    def __init__(self, folder: Path, max_passage_tokens: int, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self._max_passage_tokens = max_passage_tokens
        self._batch_size = batch_size
        self._pad = self._tokenizer.pad_token_id
        if self._pad is None:
            self._pad = self._tokenizer.eos_token_id or 0

    def _prefix_ids(self, passage: str) -> list[int]:
        ids = self._tokenizer(passage, add_special_tokens=False)["input_ids"]
        passage = str(self._tokenizer.decode(ids[: self._max_passage_tokens]))
        return self._tokenizer(QL_PREFIX.format(passage=passage), add_special_tokens=False)[
            "input_ids"
        ]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        torch = self._torch
        question = self._tokenizer(" " + query.strip(), add_special_tokens=False)["input_ids"]
        question = question[:128] or [self._pad]
        scores: list[float] = []
        for start in range(0, len(passages), self._batch_size):
            rows = [self._prefix_ids(p) for p in passages[start : start + self._batch_size]]
            width = max(len(r) for r in rows) + len(question)
            ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, prefix in enumerate(rows):
                sequence = prefix + question
                ids[i, : len(sequence)] = torch.tensor(sequence)
                mask[i, : len(sequence)] = 1
            with torch.inference_mode():
                logits = self._model(input_ids=ids, attention_mask=mask).logits.float()
            log_probs = logits.log_softmax(-1)
            target = torch.tensor(question)
            for i, prefix in enumerate(rows):
                # Logits at position t predict token t + 1.
                positions = torch.arange(len(prefix) - 1, len(prefix) - 1 + len(question))
                scores.append(float(log_probs[i, positions, target].mean()))
        return scores


class Reranker:
    """A loaded scorer on its own thread, with what Search reports about it."""

    def __init__(self, settings: RerankerSettings, scorer: Scorer | None, label: str) -> None:
        self.settings = settings
        self.label = label
        self._scorer = scorer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rerank")

    @property
    def available(self) -> bool:
        return self._scorer is not None

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if self._scorer is None:
            raise RuntimeError("no reranker is configured")
        scorer = self._scorer
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, scorer.score, query, list(passages)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def load(settings: RerankerSettings) -> Reranker:
    """The configured reranker, model verified and loaded. Blocking (seconds)."""
    if settings.backend == "none":
        return Reranker(settings, None, "")
    model = resolve(settings)
    scorer: Scorer
    if settings.backend == "cross-encoder":
        scorer = CrossEncoderScorer(model.path, settings.max_passage_tokens, settings.batch_size)
    else:
        scorer = QueryLikelihoodScorer(model.path, settings.max_passage_tokens, settings.batch_size)
    label = f"{settings.backend}:{model.id}@{model.revision}"
    log.info("reranker %s loaded (weights sha256 %s)", label, model.weights_sha256[:12])
    return Reranker(settings, scorer, label)
