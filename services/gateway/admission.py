"""Admission control for asks: a bounded number worked on at once, and a bounded queue
in front of them, fair between tenants (one queue per tenant key, served in turn).

An ask is refused at once, before any embedding or retrieval, with RESOURCE_EXHAUSTED
and a retry hint when the queue is full, or when the queue ahead of it would outlast
its deadline: the wait is estimated from the measured service time of recent asks (an
EWMA) and the number of slots. A burst is then answered as far as the stack's capacity
goes within the callers' deadlines, and the rest told to come back, instead of every
call being worked on and most dropped when their time runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ragplane.errors import DeadlineExceeded, ResourceExhausted
from ragplane.gateway import metrics
from ragplane.gateway.clients import Deadline


@dataclass(frozen=True)
class AdmissionSettings:
    max_in_flight: int
    max_queued: int
    # The service-time estimate before any ask has finished; measurements replace it.
    initial_service_s: float = 5.0
    # Weight of the newest service time in the EWMA: about the last 40 asks count. At 0.2
    # (about 9) a quiet-machine burst was planned with about 5.3 s an ask (inferred from
    # the 216 it admitted) where the stack ran at 4.5-4.8 s, turning away a fifth of what
    # it could answer (docs/reliability.md); the shedding and the check at the head of the
    # queue catch a real slowdown.
    ewma_weight: float = 0.05
    # Share of a caller's deadline kept in reserve: admitted only if the expected wait
    # plus one service time fits in the rest. Small: each share kept is a share of the
    # asks that could have been answered refused instead. But an estimate a few percent
    # too low admits asks whose turn comes too late, and those the check at the head of
    # the queue (START_MARGIN) refuses after a long wait rather than at once: a quiet
    # burst planned 7.5 % fast at 0.02 refused 22 that way (docs/reliability.md).
    headroom: float = 0.05


# A waiter whose turn comes with less than this many service times left is refused
# rather than started: service times vary, and one started is one worked on.
START_MARGIN = 1.2
# A waiter is refused before its turn only when the new estimate puts its end this far
# past its deadline: the estimate moves with the machine's load, and one refused early
# on a passing slowdown is an answer lost.
SHED_MARGIN = 1.25


@dataclass(eq=False)
class _Waiter:
    tenant: str
    deadline: Deadline
    granted: asyncio.Future[None]
    queued_at: float


class Admission:
    """Slots for asks, handed out in arrival order within a tenant and in turn between
    tenants. Not thread-safe: the gateway's event loop is its only user."""

    def __init__(
        self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._in_flight = 0
        self._queues: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._queued = 0
        self._service_s = settings.initial_service_s
        metrics.ASKS_IN_FLIGHT_LIMIT.set(settings.max_in_flight)
        metrics.ASKS_QUEUE_LIMIT.set(settings.max_queued)
        metrics.ASK_SERVICE_ESTIMATE.set(self._service_s)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def service_s(self) -> float:
        """The current estimate of one ask's service time, in seconds."""
        return self._service_s

    def expected_wait(self, ahead: int) -> float:
        """Seconds until a slot frees for a call with `ahead` calls queued before it:
        slots free at the rate max_in_flight / service time."""
        if self._in_flight < self.settings.max_in_flight and ahead == 0:
            return 0.0
        return (ahead + 1) * self._service_s / self.settings.max_in_flight

    @asynccontextmanager
    async def slot(self, tenant: str, deadline: Deadline) -> AsyncIterator[None]:
        """Holds one slot for the body; raises ResourceExhausted at once if the call
        cannot be admitted. A body that ends normally updates the service-time EWMA;
        one cut short (deadline, cancelled, failed) only when it ran longer than the
        estimate, since its service time was at least that: asks that all run out of
        time must raise it, a dependency failing fast must not lower it."""
        await self._acquire(tenant, deadline)
        started = self._clock()
        finished = False
        try:
            yield
            finished = True
        finally:
            elapsed = self._clock() - started
            self._release(elapsed if finished or elapsed > self._service_s else None)

    async def _acquire(self, tenant: str, deadline: Deadline) -> None:
        if self._in_flight < self.settings.max_in_flight and not self._queued:
            # A free slot, but while others run the ask takes about the measured service
            # time; with none running the estimate may be stale, so the ask is tried.
            if self._in_flight and not self._fits(deadline, 0.0, self.settings.headroom):
                raise self._refusal("deadline", self._too_late(deadline, 0.0, 0), 0)
            self._take()
            metrics.ASK_QUEUE_WAIT.observe(0.0)
            return
        if self._queued >= self.settings.max_queued:
            raise self._refusal(
                "queue_full",
                f"{self._queued} asks are waiting, the most the gateway queues "
                "(RAGPLANE_GATEWAY_MAX_QUEUED_ASKS)",
                self._queued,
            )
        wait = self.expected_wait(self._queued)
        if not self._fits(deadline, wait, self.settings.headroom):
            raise self._refusal(
                "deadline", self._too_late(deadline, wait, self._queued), self._queued
            )
        waiter = _Waiter(tenant, deadline, asyncio.get_running_loop().create_future(), 0.0)
        waiter.queued_at = self._clock()
        self._queues.setdefault(tenant, deque()).append(waiter)
        self._queued += 1
        metrics.ASKS_QUEUED.set(self._queued)
        await self._wait(waiter)

    async def _wait(self, waiter: _Waiter) -> None:
        remaining = waiter.deadline.remaining()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), remaining)
        except TimeoutError:
            self._forget(waiter)
            raise DeadlineExceeded(
                "the deadline passed while the ask waited for a slot; nothing was worked on"
            ) from None
        except asyncio.CancelledError:
            self._forget(waiter)
            raise
        metrics.ASK_QUEUE_WAIT.observe(self._clock() - waiter.queued_at)

    def _forget(self, waiter: _Waiter) -> None:
        """A waiter that gave up: out of the queue, or its slot handed on if it had one."""
        if waiter.granted.done() and not waiter.granted.cancelled():
            if waiter.granted.exception() is None:
                self._release(None)
            return
        waiter.granted.cancel()
        queue = self._queues.get(waiter.tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._queued -= 1
            if not queue:
                del self._queues[waiter.tenant]
            metrics.ASKS_QUEUED.set(self._queued)

    def _fits(self, deadline: Deadline, wait: float, headroom: float) -> bool:
        """Whether wait plus a service time ends within the deadline, less `headroom`
        (a share; negative: past it by that share)."""
        remaining = deadline.remaining()
        if remaining is None:
            return True
        return wait + self._service_s <= remaining * (1 - headroom)

    def _too_late(self, deadline: Deadline, wait: float, ahead: int) -> str:
        return (
            f"{ahead} asks are ahead: this one would wait about {wait:.0f} s and "
            f"take about {self._service_s:.1f} s, past its deadline in "
            f"{deadline.remaining() or 0:.0f} s"
        )

    def _refusal(self, reason: str, why: str, ahead: int) -> ResourceExhausted:
        metrics.ASKS_REFUSED.labels(reason).inc()
        retry_after = max(1.0, self.expected_wait(ahead))
        return ResourceExhausted(f"{why}; retry in {retry_after:.0f} s", retry_after=retry_after)

    def _take(self) -> None:
        self._in_flight += 1
        metrics.ASKS_IN_FLIGHT.set(self._in_flight)

    def _release(self, service_s: float | None) -> None:
        self._in_flight -= 1
        metrics.ASKS_IN_FLIGHT.set(self._in_flight)
        if service_s is not None:
            w = self.settings.ewma_weight
            self._service_s = w * service_s + (1 - w) * self._service_s
            metrics.ASK_SERVICE_ESTIMATE.set(self._service_s)
            self._shed()
        self._hand_on()

    def _hand_on(self) -> None:
        """Free slots go to the next waiters, one tenant after another."""
        while self._in_flight < self.settings.max_in_flight and self._queues:
            waiter = self._pop()
            if waiter.granted.done():  # gave up; _forget has it
                continue
            left = waiter.deadline.remaining()
            if left is not None and left < START_MARGIN * self._service_s:
                # Too little time left to finish: refused rather than worked on and
                # dropped when its deadline passes.
                waiter.granted.set_exception(
                    self._refusal("deadline", self._too_late(waiter.deadline, 0.0, 0), 0)
                )
                continue
            self._take()
            waiter.granted.set_result(None)

    def _pop(self) -> _Waiter:
        tenant, queue = next(iter(self._queues.items()))
        waiter = queue.popleft()
        self._queued -= 1
        del self._queues[tenant]
        if queue:
            self._queues[tenant] = queue  # to the back: the next tenant goes first
        metrics.ASKS_QUEUED.set(self._queued)
        return waiter

    def _service_order(self) -> Iterator[_Waiter]:
        """The waiters in the order they would get slots, absent new arrivals."""
        queues = list(self._queues.values())
        for i in range(max((len(q) for q in queues), default=0)):
            for queue in queues:
                if i < len(queue):
                    yield queue[i]

    def _shed(self) -> None:
        """With a new estimate, refuse now the waiters that the queue ahead of them
        would keep well past their deadline (SHED_MARGIN), rather than when their turn
        comes."""
        late = []
        for ahead, waiter in enumerate(self._service_order()):
            wait = self.expected_wait(ahead)
            if not waiter.granted.done() and not self._fits(waiter.deadline, wait, 1 - SHED_MARGIN):
                late.append((waiter, wait, ahead))
        for waiter, wait, ahead in late:
            queue = self._queues[waiter.tenant]
            queue.remove(waiter)
            self._queued -= 1
            if not queue:
                del self._queues[waiter.tenant]
            waiter.granted.set_exception(
                self._refusal("deadline", self._too_late(waiter.deadline, wait, ahead), ahead)
            )
        if late:
            metrics.ASKS_QUEUED.set(self._queued)
