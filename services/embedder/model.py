"""The embedder's one pinned model: resolved, verified against its pinned hash (by
ragplane.models), loaded on its backend (torch or ONNX Runtime: backends.py)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ragplane import config
from ragplane.embedder.backends import AUTO, ONNX, backend_for, exported, use_onnx
from ragplane.errors import ConfigError
from ragplane.models import ModelPin, model_identity, resolve


def forward_batch_size_for(device: str) -> int:
    """Texts per forward pass when not configured. On a CPU, small passes win: every
    text in a pass is padded to the longest, and a CPU gains little from wide matrices
    (docs/performance.md: 64-text batches cut 8 at a time ran at 1.9x the speed of one
    64-text pass). A GPU needs wide passes to be busy."""
    return 8 if device == "cpu" else 64


def forward_workers_for(device: str) -> int:
    """Forward passes run at once when not configured. On a CPU, one per core the process
    may use, each pass on one thread: a pass split over the cores waits at the end of every
    operation for its slowest thread, so a core taken a moment by anything else (gRPC, a
    tokenizer, Milvus) stalls them all, while independent passes only slow themselves
    (docs/performance.md: 1.16x on the same passes). A GPU runs one pass at a time."""
    return usable_cores() if device == "cpu" else 1


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU limit
    where one is set (a container's `limits.cpu`, rounded up), which affinity does not
    show."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()[:2]
        limit = -(-int(quota) // int(period))  # "max": no limit, ValueError
    except (OSError, ValueError, ZeroDivisionError):
        return cores
    return max(1, min(cores, limit))


class EmbeddingModel:
    """The verified sentence-transformers model, its tokenizer and its identity."""

    def __init__(
        self,
        pin: ModelPin,
        device: str,
        forward_batch_size: int = 0,
        backend: str = AUTO,
        state_dir: Path | None = None,
        forward_workers: int = 0,
    ) -> None:
        """Resolves and verifies the pin, then loads it; device "auto" takes a GPU if any,
        forward_batch_size and forward_workers 0 pick by device, backend "auto" by device
        (backends.py); the ONNX export lives in state_dir (RAGPLANE_STATE_DIR by default).
        Blocking (seconds; the first ONNX start exports, seconds more)."""
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoTokenizer

        resolved = resolve(pin)
        if device == "auto":
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.backend = backend_for(device, backend)
        folder = str(resolved.path)
        self.forward_workers = forward_workers or forward_workers_for(device)
        if self.forward_workers > 1:
            # One thread per pass: the passes, not the operations, share the cores.
            torch.set_num_threads(1)
        self.model = SentenceTransformer(folder, device=device, local_files_only=True)
        if self.backend == ONNX:
            use_onnx(
                self.model,
                exported(resolved, state_dir or config.state_dir()),
                threads=1 if self.forward_workers > 1 else 0,
            )
        # A tokenizer of its own for counting: a fast tokenizer keeps padding and
        # truncation settings as state, so sharing the model's across threads corrupts
        # the batch the model is encoding at the same time.
        self._counting_tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.model.max_seq_length is None:
            # Texts over the limit are refused, not truncated: the model must say it.
            raise ConfigError(f"{resolved.id} at {folder} sets no max_seq_length")
        self.max_sequence_length = int(self.model.max_seq_length)
        # The source weights' identity on either backend: the vectors are the same (to
        # cosine 0.9999), so a collection made with one is served by the other.
        self.identity = model_identity(
            resolved, dimension=int(self.model.get_embedding_dimension() or 0)
        )
        self.forward_batch_size = forward_batch_size or forward_batch_size_for(device)
        self._passes = ThreadPoolExecutor(self.forward_workers, thread_name_prefix="forward")
        # The model's tokenizer keeps padding and truncation as state: one pass at a time.
        self._tokenizing = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised vectors, in the order of `texts`. Blocking."""
        if self.forward_workers == 1:
            # sentence-transformers sorts the texts by length before cutting them into
            # forward passes, so a large dynamic batch pads far less than its parts would.
            return self.model.encode(
                texts,
                batch_size=self.forward_batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        # The same sorting and cutting, the passes run forward_workers at a time.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        # A batch too small to give every worker a full pass is split evenly between
        # them (a query of 8 texts: 2 passes of 4), so no core idles; one text is one pass.
        size = max(1, min(self.forward_batch_size, -(-len(texts) // self.forward_workers)))
        passes = [order[i : i + size] for i in range(0, len(order), size)]
        vectors = np.empty((len(texts), self.identity.dimension), dtype=np.float32)
        encoded = self._passes.map(self._encode_pass, ([texts[i] for i in p] for p in passes))
        for indices, part in zip(passes, encoded, strict=True):
            vectors[indices] = part
        return vectors

    def _encode_pass(self, texts: list[str]) -> np.ndarray:
        """One forward pass, as sentence-transformers' encode runs each of its batches."""
        import torch

        with self._tokenizing:
            features = self.model.tokenize(texts)
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(embeddings, p=2, dim=1).numpy()

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self._counting_tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]
