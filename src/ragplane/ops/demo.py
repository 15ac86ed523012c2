"""The main job on the embedded default (`make demo`): start the stack, index the sample
corpus, ask one question it answers and one it cannot, stop the stack."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ragplane.client import GrpcClient
from ragplane.ops import stack
from ragplane.ops.cli import ask, ingest, layout_from_env

# The sample corpus, relative to the repository root `make demo` runs from.
CORPUS = Path("samples") / "handbook"
QUESTIONS = (
    "How do I roll back a bad deploy of ledger-api?",
    "What is Kestrel Labs' parental leave policy?",
)


async def run(corpus: Path) -> int:
    layout = layout_from_env()
    already_running = any(stack.running_pid(layout, n) for n in ("milvus", *stack.SERVICES))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    print(f"Starting the stack (state in {layout.state_dir}) ...")
    await stack.up(layout)
    timings["start"] = time.perf_counter() - t
    try:
        async with GrpcClient(layout.address("gateway"), api_key=layout.api_key()) as gateway:
            t = time.perf_counter()
            print(f"\nIndexing {corpus} ...")
            await ingest(gateway, [corpus])
            timings["index"] = time.perf_counter() - t
            print()
            t = time.perf_counter()
            answered, _, _ = await ask(gateway, QUESTIONS[0])
            _, _, unanswerable = await ask(gateway, QUESTIONS[1])
            timings["ask"] = time.perf_counter() - t
        peaks = stack.peak_rss_bytes(layout)
    finally:
        if not already_running:
            print("Stopping the stack ...")
            stack.down(layout)
    print(
        "Timings: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; peak memory {sum(peaks.values()) / 2**30:.2f} GiB ("
        + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peaks.items())
        + ")"
    )
    ok = bool(answered.strip()) and unanswerable.abstained
    if not ok:
        print("demo: unexpected result (see above)", file=sys.stderr)
    return 0 if ok else 1


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    if not corpus.is_dir():
        sys.exit(f"demo: {corpus} is not a folder; run from the repository root or pass the corpus")
    sys.exit(asyncio.run(run(corpus)))


if __name__ == "__main__":
    main()
