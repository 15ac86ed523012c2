"""vLLM's own OpenAI-compatible server, started from the same package: what the
`openai` backend talks to in production, and the baseline the benchmarks compare with."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ragplane.generator.backends import vllm_environment
from ragplane.models import ResolvedModel


def start(
    folder: ResolvedModel,
    port: int,
    state_dir: Path,
    log: Path,
    max_model_len: int = 2048,
    kv_cache_bytes: int = 256 * 2**20,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Starts `python -m vllm.entrypoints.openai.api_server` on loopback."""
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder.path), "--served-model-name", folder.id,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), "--kv-cache-memory-bytes", str(kv_cache_bytes),
        "--enforce-eager",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, **vllm_environment(state_dir), **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_healthy(url: str, proc: subprocess.Popen, log: Path, seconds: float = 600) -> None:
    """Returns once GET /health answers 200; raises with the log tail if the server died."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{url}/health", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = await asyncio.to_thread(log.read_text, errors="replace")
                raise RuntimeError(f"vLLM OpenAI server did not start:\n{tail[-3000:]}")
            await asyncio.sleep(1)
