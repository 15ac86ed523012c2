"""Local processes, started and stopped one way: by the stack, Milvus Lite, the tests and
the benchmarks. Free loopback ports, a process with its log file, waiting until it is
ready (raising with the log's tail if it died first), and stopping a process tree."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragplane.channels import open_channel

LOOPBACK = "127.0.0.1"


class StartError(RuntimeError):
    """A process died or did not become ready in time; the message has its log tail."""


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Distinct free ports on host: every socket stays open until all ports are picked."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


def log_tail(log: Path, lines: int = 40, width: int = 1000) -> str:
    """The last lines of a log file, or a note that there is none. Lines are cut to
    `width` characters: vLLM logs its whole configuration on one."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(line[:width] for line in text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Process:
    """A process this program started, writing its output to `log`."""

    popen: subprocess.Popen[bytes]
    log: Path
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    async def wait_until(self, ready: Callable[[], Awaitable[bool]], within_s: float) -> None:
        """Returns once `ready()` is true; raises StartError if the process exits first."""
        await wait_ready(ready, name=self.name, alive=self.alive, log=self.log, within_s=within_s)

    async def wait_serving(self, address: str, within_s: float) -> None:
        """Returns once gRPC health on `address` reports SERVING."""
        await self.wait_until(lambda: serving(address), within_s)

    async def wait_accepting(self, host: str, port: int, within_s: float) -> None:
        """Returns once host:port accepts TCP connections."""
        await self.wait_until(lambda: port_accepts(host, port), within_s)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL if it has not exited after `timeout` s, then SIGKILL to any
        process it left behind; returns its exit code. Blocking."""
        children = _children(self.popen.pid)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        _kill(children)
        return self.popen.returncode


def start_process(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    detach: bool = False,
    cwd: Path | None = None,
) -> Process:
    """Starts argv with stdout and stderr appended to `log` (its folder is created).

    `env` is the whole environment (default: this one's) with PYTHONUNBUFFERED set, so
    that the log keeps up; `detach` starts a new session that outlives the caller's
    terminal and its Ctrl-C."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    return Process(popen, log, name or Path(argv[0]).name)


async def wait_ready(
    ready: Callable[[], Awaitable[bool]],
    *,
    name: str,
    alive: Callable[[], bool],
    log: Path,
    within_s: float,
    interval: float = 0.3,
) -> None:
    """Polls `ready()` until it is true; raises StartError with the log's tail when
    `alive()` turns false first or `within_s` seconds pass."""
    deadline = time.monotonic() + within_s
    while not await ready():
        if not alive():
            raise StartError(f"{name} exited during start-up (log {log}):\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise StartError(
                f"{name} not ready after {within_s:.0f} s (log {log}):\n{log_tail(log)}"
            )
        await asyncio.sleep(interval)


async def port_accepts(host: str, port: int, wait_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def health_status(address: str, wait_s: float = 2.0) -> str:
    """The gRPC health of a server: SERVING, NOT_SERVING, or UNREACHABLE."""
    try:
        async with open_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=wait_s
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"


async def serving(address: str) -> bool:
    return await health_status(address) == "SERVING"


def pid_alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process_tree(pid: int, timeout: float = 10.0) -> None:
    """Stops a process found by pid (say, from a pid file): SIGTERM, SIGKILL if it has
    not exited after `timeout` s, then SIGKILL to whatever it left behind (vLLM's
    engine core, say). Blocking. For a Process this program started, use its stop()."""
    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
        root.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([root], timeout=timeout)
    _kill([*alive, *children])


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill(procs: list[psutil.Process]) -> None:
    running = [p for p in procs if p.is_running()]
    for p in running:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(running, timeout=5)
