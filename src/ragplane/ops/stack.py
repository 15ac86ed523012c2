"""The one-machine stack: Milvus Lite, PostgreSQL (the ingestion jobs' store) and the four
services as local processes.

`ragplane up` starts a detached supervisor (supervisor.py), which starts them (pid files
and logs under the state dir) and restarts any that dies, as Kubernetes would; `up`
waits until each reports SERVING. `ragplane down` stops the supervisor, which stops
them with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ragplane import keys
from ragplane.config import DEFAULT_PORTS
from ragplane.ops import postgres, processes
from ragplane.ops.milvus_lite import milvus_lite_command
from ragplane.telemetry import METRICS_PORTS

SERVICES = ("embedder", "retriever", "generator", "gateway")
# Generous: the first start converts the generator's model, and vLLM warms up.
START_TIMEOUT_S = {
    "milvus": 60,
    "postgres": 60,
    "embedder": 180,
    "retriever": 900,
    "generator": 900,
    "gateway": 60,
}
# What `up` waits for, in turn: the gateway reports SERVING only once the services
# behind it do.
READY_ORDER = (("milvus", "postgres"), ("embedder", "retriever", "generator"), ("gateway",))
# The stores, started before the services and stopped after them.
STORES = ("milvus", "postgres")
# Stopped in this order: the gateway first, the stores last.
STOP_ORDER = ("gateway", "generator", "retriever", "embedder", "postgres", "milvus")
SUPERVISOR = "supervisor"


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
    # PostgreSQL, the ingestion jobs' store (RAGPLANE_GATEWAY_JOBS_DSN).
    postgres_port: int = 50432
    # Whether the stack runs it; None: where PostgreSQL is installed. Without it the
    # stack serves everything but ingestion jobs (FAILED_PRECONDITION, saying why).
    jobs_store: bool | None = None

    def stores(self) -> tuple[str, ...]:
        """The stores this stack runs: Milvus Lite, and PostgreSQL unless it has none."""
        runs = self.jobs_store if self.jobs_store is not None else postgres.installed()
        return STORES if runs else ("milvus",)

    def address(self, name: str) -> str:
        if name == "postgres":
            return f"{self.host}:{self.postgres_port}"
        return f"{self.host}:{self.ports[name]}"

    def port(self, name: str) -> int:
        return self.postgres_port if name == "postgres" else self.ports[name]

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

    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def postgres_password_file(self) -> Path:
        return self.state_dir / "postgres.password"

    @property
    def keys_file(self) -> Path:
        """The gateway's API keys (hashes; ragplane.keys), made by the first `up`."""
        return self.state_dir / keys.KEYS_FILE

    def api_key(self) -> str | None:
        """The local tenant's admin key that the first `up` wrote (<state>/api-key)."""
        return keys.read_api_key(self.state_dir)

    @property
    def restarts_file(self) -> Path:
        """Restarts per process, written by the supervisor."""
        return self.run_dir / "restarts.json"

    def to_json(self) -> str:
        fields = asdict(self)
        fields["state_dir"] = str(self.state_dir)
        fields["milvus_data_dir"] = str(self.milvus_data_dir) if self.milvus_data_dir else None
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> StackLayout:
        fields = json.loads(text)
        fields["state_dir"] = Path(fields["state_dir"])
        if fields.get("milvus_data_dir"):
            fields["milvus_data_dir"] = Path(fields["milvus_data_dir"])
        return cls(**fields)

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
        env["RAGPLANE_GATEWAY_API_KEYS_FILE"] = str(self.keys_file)
        if "postgres" in self.stores():
            env["RAGPLANE_GATEWAY_JOBS_DSN"] = postgres.dsn(
                self.host, self.postgres_port, self.postgres_password_file
            )
        env.update(extra or {})
        return env


def command(layout: StackLayout, name: str) -> list[str]:
    if name == "milvus":
        return milvus_lite_command(layout.milvus_dir(), layout.ports["milvus"], layout.host)
    if name == "postgres":
        return postgres.command(
            layout.postgres_dir(), layout.host, layout.postgres_port, layout.postgres_password_file
        )
    return [sys.executable, "-m", f"ragplane.{name}.server"]


def running_pid(layout: StackLayout, name: str) -> int | None:
    """The pid of a stack process that is still alive, else None."""
    try:
        pid = int(layout.pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if processes.pid_alive(pid) else None


# Scheduling priority (nice) per process on the one machine, where Kubernetes would give
# each pod its own CPUs: the generator's engine computes without pause while answers are
# being written, and at the same priority it slows the gateway's event loop, whose job
# under a burst is to refuse at once what cannot be answered (about 0.8 ms of CPU per
# refusal, docs/reliability.md). When the gateway is idle the generator still gets all
# the CPU it wants; the engine's own processes inherit the value.
NICENESS = {"generator": 5}


def launch(layout: StackLayout, name: str, env: dict[str, str] | None = None) -> processes.Process:
    """Starts one process detached from the caller's session (with this environment,
    unless `env` is given), at its NICENESS, and writes its pid file."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    proc = processes.start_process(
        command(layout, name), layout.log_file(name), env=env, name=name, detach=True
    )
    if niceness := NICENESS.get(name, 0):
        # Relative to this process's own (raising a niceness needs no privilege), before
        # the process has started its workers, so that they inherit it.
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, proc.pid, min(own + niceness, 19))
    layout.pid_file(name).write_text(str(proc.pid))
    return proc


def start_supervisor(layout: StackLayout, env: dict[str, str]) -> int:
    """Starts the supervisor detached, with the services' environment; returns its pid."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    proc = processes.start_process(
        [sys.executable, "-m", "ragplane.ops.supervisor", layout.to_json()],
        layout.log_file(SUPERVISOR),
        env=env,
        name=SUPERVISOR,
        detach=True,
    )
    layout.pid_file(SUPERVISOR).write_text(str(proc.pid))
    return proc.pid


def restarts(layout: StackLayout) -> dict[str, int]:
    """How often the supervisor restarted each process since `up`."""
    try:
        record = json.loads(layout.restarts_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {name: int(entry.get("restarts", 0)) for name, entry in record.items()}


async def wait_ready(layout: StackLayout, name: str, pid: int) -> None:
    """Returns once a store (Milvus, PostgreSQL) accepts connections or a service reports
    SERVING; raises processes.StartError with the log tail if the process exits or the
    time runs out."""
    host, port = layout.host, layout.port(name)
    await processes.wait_ready(
        (lambda: processes.port_accepts(host, port))
        if name in STORES
        else (lambda: processes.serving(layout.address(name))),
        name=name,
        alive=lambda: processes.pid_alive(pid),
        log=layout.log_file(name),
        within_s=START_TIMEOUT_S[name],
        interval=0.5,
    )


async def up(layout: StackLayout, env_extra: dict[str, str] | None = None, report=print) -> None:
    """Starts the supervisor unless it runs (it starts whatever is not running yet) and
    waits until everything is ready."""
    supervisor = running_pid(layout, SUPERVISOR)
    if keys.ensure_local_key(layout.state_dir) is not None:
        report(f"created an admin API key for tenant '{keys.LOCAL_TENANT}' in {layout.state_dir}")
    if "postgres" not in layout.stores():
        report(
            "PostgreSQL is not installed: ingestion jobs are off, everything else serves "
            "(apt-get install postgresql, or RAGPLANE_POSTGRES_BIN_DIR)"
        )
    if supervisor is None:
        supervisor = start_supervisor(layout, layout.service_env(env_extra))
        report(f"started the supervisor (pid {supervisor}), log {layout.log_file(SUPERVISOR)}")
    try:
        runs = (*layout.stores(), *SERVICES)
        for group in READY_ORDER:
            pids = {n: await _started(layout, n, supervisor) for n in group if n in runs}
            for name, pid in pids.items():
                report(f"{name} (pid {pid}), log {layout.log_file(name)}")
            await asyncio.gather(*(wait_ready(layout, n, p) for n, p in pids.items()))
    except BaseException:
        down(layout, report=lambda _: None)
        raise
    report(
        f"stack ready: gateway on {layout.address('gateway')} (gRPC) and "
        f"http://{layout.http_address()}/v1 (HTTP)"
    )


async def _started(layout: StackLayout, name: str, supervisor: int) -> int:
    """The pid of `name` once the supervisor has started it."""
    while (pid := running_pid(layout, name)) is None:
        if not processes.pid_alive(supervisor):
            log = layout.log_file(SUPERVISOR)
            raise processes.StartError(
                f"the supervisor exited (log {log}):\n{processes.log_tail(log)}"
            )
        await asyncio.sleep(0.2)
    return pid


def down(layout: StackLayout, timeout: float = 30.0, report=print) -> None:
    """Stops the supervisor, which stops the services (gateway first), then Milvus; then
    anything left: SIGTERM, then SIGKILL after timeout."""
    supervisor = running_pid(layout, SUPERVISOR)
    if supervisor is not None:
        # Its own stop gives each process `timeout`, one after another.
        processes.stop_process_tree(supervisor, len(STOP_ORDER) * timeout + 10)
        report(f"stopped the supervisor (pid {supervisor})")
    layout.pid_file(SUPERVISOR).unlink(missing_ok=True)
    for name in STOP_ORDER:
        pid = running_pid(layout, name)
        if pid is not None:
            processes.stop_process_tree(pid, timeout)
            report(f"stopped {name} (pid {pid})")
        layout.pid_file(name).unlink(missing_ok=True)


def peak_rss_bytes(layout: StackLayout) -> dict[str, int]:
    """Peak resident memory (VmHWM) of each stack process and its children."""
    peaks: dict[str, int] = {}
    for name in (*layout.stores(), *SERVICES):
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
