"""The one-machine stack: Milvus Lite plus the four services as local processes.

`ragplane up` starts them detached (pid files and logs under the state dir), waits
until each reports SERVING, and `ragplane down` stops them with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ragplane.config import DEFAULT_PORTS
from ragplane.ops import processes
from ragplane.ops.milvus_lite import milvus_lite_command
from ragplane.telemetry import METRICS_PORTS

SERVICES = ("embedder", "retriever", "generator", "gateway")
# Generous: the first start converts the generator's model, and vLLM warms up.
START_TIMEOUT_S = {"milvus": 60, "embedder": 180, "retriever": 900, "generator": 900, "gateway": 60}


@dataclass(frozen=True)
class StackLayout:
    """Where each part of the stack listens and keeps its files."""

    state_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics_ports: dict[str, int] = field(default_factory=lambda: dict(METRICS_PORTS))
    # The gateway's HTTP API (RAGPLANE_GATEWAY_HTTP_ADDR).
    http_port: int = 50060
    milvus_data_dir: Path | None = None
    host: str = "127.0.0.1"

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def milvus_dir(self) -> Path:
        return self.milvus_data_dir or self.state_dir / "milvus"

    def service_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RAGPLANE_STATE_DIR": str(self.state_dir),
                "RAGPLANE_MILVUS_URI": f"http://{self.address('milvus')}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for name in SERVICES:
            env[f"RAGPLANE_{name.upper()}_ADDR"] = self.address(name)
            env[f"RAGPLANE_{name.upper()}_METRICS_ADDR"] = f"{self.host}:{self.metrics_ports[name]}"
            if name != "gateway":
                env[f"RAGPLANE_GATEWAY_{name.upper()}_TARGET"] = self.address(name)
        env["RAGPLANE_GATEWAY_HTTP_ADDR"] = self.http_address()
        env.update(extra or {})
        return env


def command(layout: StackLayout, name: str) -> list[str]:
    if name == "milvus":
        return milvus_lite_command(layout.milvus_dir(), layout.ports["milvus"], layout.host)
    return [sys.executable, "-m", f"ragplane.{name}.server"]


def running_pid(layout: StackLayout, name: str) -> int | None:
    """The pid of a stack process that is still alive, else None."""
    try:
        pid = int(layout.pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if processes.pid_alive(pid) else None


def launch(layout: StackLayout, name: str, env: dict[str, str]) -> int:
    """Starts one process detached from the caller's session; returns its pid."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    proc = processes.start_process(
        command(layout, name), layout.log_file(name), env=env, name=name, detach=True
    )
    layout.pid_file(name).write_text(str(proc.pid))
    return proc.pid


async def wait_ready(layout: StackLayout, name: str, pid: int) -> None:
    """Returns once Milvus accepts connections or a service reports SERVING; raises
    processes.StartError with the log tail if the process exits or the time runs out."""
    host, port = layout.host, layout.ports[name]
    await processes.wait_ready(
        (lambda: processes.port_accepts(host, port))
        if name == "milvus"
        else (lambda: processes.serving(layout.address(name))),
        name=name,
        alive=lambda: processes.pid_alive(pid),
        log=layout.log_file(name),
        within_s=START_TIMEOUT_S[name],
        interval=0.5,
    )


async def up(layout: StackLayout, env_extra: dict[str, str] | None = None, report=print) -> None:
    """Starts whatever is not running yet and waits until everything is ready."""
    env = layout.service_env(env_extra)
    try:
        for group in (("milvus",), SERVICES):
            pids = {}
            for name in group:
                pid = running_pid(layout, name)
                if pid is None:
                    pid = launch(layout, name, env)
                    report(f"started {name} (pid {pid}), log {layout.log_file(name)}")
                pids[name] = pid
            await asyncio.gather(*(wait_ready(layout, n, p) for n, p in pids.items()))
    except BaseException:
        down(layout, report=lambda _: None)
        raise
    report("stack ready: gateway on " + layout.address("gateway"))


def down(layout: StackLayout, timeout: float = 30.0, report=print) -> None:
    """Stops the services (gateway first), then Milvus: SIGTERM, then SIGKILL after timeout."""
    for name in ("gateway", "generator", "retriever", "embedder", "milvus"):
        pid = running_pid(layout, name)
        if pid is not None:
            processes.stop_process_tree(pid, timeout)
            report(f"stopped {name} (pid {pid})")
        layout.pid_file(name).unlink(missing_ok=True)


def peak_rss_bytes(layout: StackLayout) -> dict[str, int]:
    """Peak resident memory (VmHWM) of each stack process and its children."""
    peaks: dict[str, int] = {}
    for name in ("milvus", *SERVICES):
        pid = running_pid(layout, name)
        if pid is None:
            continue
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        peaks[name] = sum(_vm_hwm(p.pid) for p in procs)
    return peaks


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
