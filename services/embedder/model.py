"""The embedder's one pinned model: resolved, verified against its pinned hash (by
ragplane.models), loaded on its backend (torch or ONNX Runtime: backends.py)."""

from __future__ import annotations

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


class EmbeddingModel:
    """The verified sentence-transformers model, its tokenizer and its identity."""

    def __init__(
        self,
        pin: ModelPin,
        device: str,
        forward_batch_size: int = 0,
        backend: str = AUTO,
        state_dir: Path | None = None,
    ) -> None:
        """Resolves and verifies the pin, then loads it; device "auto" takes a GPU if any,
        forward_batch_size 0 picks by device, backend "auto" by device (backends.py); the
        ONNX export lives in state_dir (RAGPLANE_STATE_DIR by default). Blocking (seconds;
        the first ONNX start exports, seconds more)."""
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoTokenizer

        resolved = resolve(pin)
        if device == "auto":
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.backend = backend_for(device, backend)
        folder = str(resolved.path)
        self.model = SentenceTransformer(folder, device=device, local_files_only=True)
        if self.backend == ONNX:
            use_onnx(self.model, exported(resolved, state_dir or config.state_dir()))
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

    def encode(self, texts: list[str]) -> np.ndarray:
        # sentence-transformers sorts the texts by length before cutting them into
        # forward passes, so a large dynamic batch pads far less than its parts would.
        return self.model.encode(
            texts,
            batch_size=self.forward_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self._counting_tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]
