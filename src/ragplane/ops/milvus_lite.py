"""Milvus Lite as a local process, for the one-machine stack and the tests.

Milvus Lite runs as its own server (`milvus-lite server`) and clients connect by URI,
exactly as they would to a Milvus server; nothing opens its data directory in-process.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_START_TIMEOUT_S = 60.0


class MilvusLiteError(RuntimeError):
    """Milvus Lite died or did not accept connections in time; the message has its log tail."""


def milvus_lite_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
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


def start_milvus_lite(
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    timeout: float = DEFAULT_START_TIMEOUT_S,
    detach: bool = False,
) -> subprocess.Popen:
    """Starts Milvus Lite and blocks until it accepts connections on host:port.

    `detach` starts it in its own session so it outlives the caller's terminal. This
    blocks for up to `timeout` seconds; async callers run it with asyncio.to_thread.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            milvus_lite_command(data_dir, port, host),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    try:
        wait_until_accepting(proc, host, port, log_path, timeout)
    except BaseException:
        stop_process(proc, timeout=5.0)
        raise
    return proc


def wait_until_accepting(
    proc: subprocess.Popen, host: str, port: int, log_path: Path, timeout: float
) -> None:
    """Polls until the port accepts a TCP connection; raises if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MilvusLiteError(
                f"Milvus Lite exited with code {proc.returncode} during start-up "
                f"(log {log_path}):\n{log_tail(log_path)}"
            )
        if port_accepts(host, port):
            return
        time.sleep(0.2)
    raise MilvusLiteError(
        f"Milvus Lite did not accept connections on {host}:{port} within {timeout:.0f} s "
        f"(log {log_path}):\n{log_tail(log_path)}"
    )


def port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
