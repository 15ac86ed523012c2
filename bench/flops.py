"""How far the embedder is from the machine's compute limit: the model's arithmetic per
text, counted from its configuration, against a matmul microbenchmark's FLOP/s."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Square fp32 matrices of this size fill a CPU's caches and vector units; each is
# multiplied for at least MATMUL_SECONDS, and the best of MATMUL_RUNS is the peak.
MATMUL_SIZE = 2048
MATMUL_SECONDS = 1.0
MATMUL_RUNS = 3


@dataclass(frozen=True)
class EncoderShape:
    """What a BERT-style encoder's arithmetic depends on (its Hugging Face config)."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, folder: Path | str) -> EncoderShape:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size)

    def flops(self, tokens: int) -> float:
        """Multiply-adds (x2) of one text of `tokens` tokens, unpadded: per layer the Q, K,
        V and output projections, the feed-forward pair, and attention's two n x n
        products; embeddings, norms, softmax and pooling are left out (a few per cent)."""
        projections = 2 * tokens * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)
        attention = 2 * 2 * tokens**2 * self.hidden
        return float(self.layers * (projections + attention))

    def total_flops(self, token_counts: Sequence[int]) -> float:
        return sum(self.flops(n) for n in token_counts)


def matmul_peak(
    size: int = MATMUL_SIZE, seconds: float = MATMUL_SECONDS, runs: int = MATMUL_RUNS
) -> dict[str, Any]:
    """fp32 FLOP/s of torch's matmul on every core torch uses by default: the compute
    limit the embedder's FLOP/s is a fraction of. Blocking (about runs x seconds)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: the first call picks kernels
    rates = []
    for _ in range(runs):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            torch.mm(a, b)
            count += 1
        rates.append(2 * size**3 * count / elapsed)
    return {
        "gflops": max(rates) / 1e9,
        "gflops_runs": [r / 1e9 for r in rates],
        "size": size,
        "threads": torch.get_num_threads(),
    }
