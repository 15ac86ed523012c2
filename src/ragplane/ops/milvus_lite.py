"""Milvus Lite as a local process, for the one-machine stack and the tests.

Milvus Lite runs as its own server (`milvus-lite server`) and clients connect by URI,
exactly as they would to a Milvus server; nothing opens its data directory in-process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ragplane.ops import processes

DEFAULT_START_TIMEOUT_S = 60.0


def milvus_lite_command(data_dir: Path, port: int, host: str = processes.LOOPBACK) -> list[str]:
    """The server command line, using the console script installed next to this Python."""
    executable = Path(sys.executable).with_name("milvus-lite")
    return [
        str(executable),
        "server",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]


async def start_milvus_lite(
    data_dir: Path,
    port: int,
    log: Path,
    *,
    host: str = processes.LOOPBACK,
    within_s: float = DEFAULT_START_TIMEOUT_S,
    detach: bool = False,
) -> processes.Process:
    """Starts Milvus Lite and returns once it accepts connections on host:port; raises
    processes.StartError with its log tail if it exits or is not up within `within_s` seconds.

    `detach` starts it in its own session so it outlives the caller's terminal."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    proc = processes.start_process(
        milvus_lite_command(data_dir, port, host), log, name="Milvus Lite", detach=detach
    )
    try:
        await proc.wait_accepting(host, port, within_s)
    except BaseException:
        proc.stop(timeout=5.0)
        raise
    return proc
