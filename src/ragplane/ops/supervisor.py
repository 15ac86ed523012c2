"""The one-machine stack's supervisor: what Kubernetes does for a pod, done for local
processes. `ragplane up` starts it detached; it starts Milvus Lite, PostgreSQL (the
ingestion jobs' store) and the four services, restarts any that exits (after a backoff
that doubles while it keeps failing, as a CrashLoopBackOff does), kills what a dead
process left behind (vLLM's engine core), and records every restart in the state dir for
`ragplane status`. SIGTERM (`ragplane down`) stops the services, gateway first, then
PostgreSQL and Milvus, and then itself.

Run as `python -m ragplane.ops.supervisor LAYOUT_JSON`; the services get its environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field

import psutil

from ragplane.ops import processes, stack

log = logging.getLogger("ragplane.supervisor")

CHECK_INTERVAL_S = 0.5
# A restart waits 1 s, then 2, 4, ... up to this while the process keeps dying young.
MAX_BACKOFF_S = 30.0
# A process that ran this long before exiting starts its backoff afresh.
HEALTHY_RUN_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    """One supervised process: ours (popen) or found running at start (pid only)."""

    name: str
    pid: int
    process: processes.Process | None = None
    started_at: float = field(default_factory=time.monotonic)
    # Its descendants as last seen, killed if it dies and leaves them behind.
    descendants: list[psutil.Process] = field(default_factory=list)
    restarts: int = 0
    streak: int = 0
    restart_at: float | None = None
    last_exit: int | None = None

    def exit_code(self) -> int | None:
        """None while it runs; its exit code (or -1 if unknown) once it has exited."""
        if self.process is not None:
            return self.process.popen.poll()
        return None if processes.pid_alive(self.pid) else -1


class Supervisor:
    def __init__(self, layout: stack.StackLayout) -> None:
        self.layout = layout
        self.children: dict[str, Child] = {}
        self._stopping = asyncio.Event()

    def _start(self, name: str) -> Child:
        process = stack.launch(self.layout, name)
        log.info("started %s (pid %d)", name, process.pid)
        return Child(name, process.pid, process)

    def _adopt_or_start(self, name: str) -> Child:
        pid = stack.running_pid(self.layout, name)
        if pid is not None:
            log.info("supervising %s (pid %d), already running", name, pid)
            return Child(name, pid)
        return self._start(name)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self._write_restarts()
        try:
            for store in self.layout.stores():
                self.children[store] = self._adopt_or_start(store)
            # The services start once the stores accept connections.
            await self._await_stores()
            for name in stack.SERVICES:
                if not self._stopping.is_set():
                    self.children[name] = self._adopt_or_start(name)
            while not self._stopping.is_set():
                self._check()
                try:
                    await asyncio.wait_for(self._stopping.wait(), CHECK_INTERVAL_S)
                except TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(self._stop_all)

    async def _await_stores(self) -> None:
        stores = self.layout.stores()
        deadline = time.monotonic() + max(stack.START_TIMEOUT_S[s] for s in stores)
        ports = [self.layout.port(s) for s in stores]
        while time.monotonic() < deadline and not self._stopping.is_set():
            accepting = [await processes.port_accepts(self.layout.host, p) for p in ports]
            if all(accepting):
                return
            await asyncio.sleep(0.3)

    def _check(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            code = child.exit_code()
            if code is None:
                self._remember_descendants(child)
                continue
            self._on_exit(child, code, now)

    def _remember_descendants(self, child: Child) -> None:
        try:
            child.descendants = psutil.Process(child.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass

    def _on_exit(self, child: Child, code: int, now: float) -> None:
        ran = now - child.started_at
        child.streak = 0 if ran >= HEALTHY_RUN_S else child.streak + 1
        delay = min(MAX_BACKOFF_S, 2.0 ** max(0, child.streak - 1))
        child.last_exit = code
        child.restart_at = now + delay
        leftovers = [p for p in child.descendants if p.is_running()]
        for p in leftovers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        log.warning(
            "%s (pid %d) exited with %s after %.0f s%s; restarting in %.0f s",
            child.name,
            child.pid,
            code,
            ran,
            f", killed {len(leftovers)} processes it left" if leftovers else "",
            delay,
        )

    def _restart(self, child: Child) -> None:
        fresh = self._start(child.name)
        fresh.restarts = child.restarts + 1
        fresh.streak = child.streak
        fresh.last_exit = child.last_exit
        self.children[child.name] = fresh
        self._write_restarts()

    def _write_restarts(self) -> None:
        record = {
            name: {"restarts": c.restarts, "last_exit": c.last_exit, "pid": c.pid}
            for name, c in self.children.items()
        }
        path = self.layout.restarts_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        temporary.replace(path)

    def _stop_all(self) -> None:
        """Gateway first, the stores last; SIGKILL after STOP_TIMEOUT_S."""
        for name in stack.STOP_ORDER:
            child = self.children.get(name)
            if child is None:
                continue
            if child.process is not None:
                child.process.stop(STOP_TIMEOUT_S)
            elif child.restart_at is None:
                processes.stop_process_tree(child.pid, STOP_TIMEOUT_S)
            self.layout.pid_file(name).unlink(missing_ok=True)
            log.info("stopped %s", name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    layout = stack.StackLayout.from_json(args[0])
    asyncio.run(Supervisor(layout).run())
    log.info("supervisor stopped")


if __name__ == "__main__":
    main()
