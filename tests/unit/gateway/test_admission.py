"""Admission control: a bounded number of asks worked on, a bounded queue fair between
tenants, and refusals at once (with a retry hint) when the queue is full or would
outlast a caller's deadline."""

from __future__ import annotations

import asyncio

import pytest

from ragplane.errors import DeadlineExceeded, ResourceExhausted
from ragplane.gateway.admission import Admission, AdmissionSettings
from ragplane.gateway.clients import Deadline


class Held:
    """An ask holding its slot until released."""

    def __init__(self, admission: Admission, tenant: str = "", budget: float | None = None):
        self.release = asyncio.Event()
        self.admitted = asyncio.Event()
        self.task = asyncio.create_task(self._run(admission, tenant, budget))

    async def _run(self, admission: Admission, tenant: str, budget: float | None) -> None:
        async with admission.slot(tenant, Deadline(budget)):
            self.admitted.set()
            await self.release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def admission(in_flight: int = 2, queued: int = 4, service_s: float = 1.0) -> Admission:
    return Admission(AdmissionSettings(in_flight, queued, initial_service_s=service_s))


async def test_over_the_slots_calls_wait_then_go_in_order():
    a = admission(in_flight=1)
    first, second = Held(a), Held(a)
    await settle()
    assert first.admitted.is_set() and not second.admitted.is_set()
    assert (a.in_flight, a.queued) == (1, 1)
    first.release.set()
    await asyncio.wait_for(second.admitted.wait(), 1)
    second.release.set()
    await asyncio.gather(first.task, second.task)
    assert (a.in_flight, a.queued) == (0, 0)


async def test_a_full_queue_refuses_at_once_with_a_retry_hint():
    a = admission(in_flight=1, queued=2, service_s=4.0)
    held = [Held(a) for _ in range(3)]  # one in flight, two queued
    await settle()
    with pytest.raises(ResourceExhausted, match="RAGPLANE_GATEWAY_MAX_QUEUED_ASKS") as err:
        async with a.slot("", Deadline(None)):
            pass
    # Two ahead at 4 s a slot: the queue drains in about 12 s.
    assert err.value.retry_after == pytest.approx(12.0)
    for h in held:
        h.release.set()
    await asyncio.gather(*(h.task for h in held))


async def test_a_deadline_the_queue_would_outlast_is_refused_at_once():
    a = admission(in_flight=1, queued=100, service_s=10.0)
    held = [Held(a) for _ in range(5)]  # one in flight, four queued: ~50 s before a slot
    await settle()
    with pytest.raises(ResourceExhausted, match="past its deadline") as err:
        async with a.slot("", Deadline(30.0)):
            pass
    assert err.value.retry_after and err.value.retry_after >= 40
    # A caller allowing enough time is queued.
    patient = Held(a, budget=300.0)
    await settle()
    assert a.queued == 5
    for h in [*held, patient]:
        h.release.set()
    await asyncio.gather(*(h.task for h in [*held, patient]))


async def test_tenants_take_turns():
    a = admission(in_flight=1, queued=10)
    running = Held(a, "x")
    await settle()
    # x queues three, then y one: y's goes second, not fourth.
    waiting = [Held(a, "x"), Held(a, "x"), Held(a, "x"), Held(a, "y")]
    await settle()
    served: list[int] = []
    running.release.set()
    for _ in waiting:
        done = await next_admitted(waiting, served)
        served.append(done)
        waiting[done].release.set()
    assert served == [0, 3, 1, 2]
    await asyncio.gather(running.task, *(h.task for h in waiting))


async def next_admitted(held: list[Held], served: list[int]) -> int:
    for _ in range(100):
        for i, h in enumerate(held):
            if i not in served and h.admitted.is_set():
                return i
        await asyncio.sleep(0.01)
    raise AssertionError("nobody admitted")


async def test_a_caller_that_gives_up_leaves_the_queue():
    a = admission(in_flight=1)
    running, gone = Held(a), Held(a)
    await settle()
    gone.task.cancel()
    await settle()
    assert a.queued == 0
    running.release.set()
    await running.task
    assert a.in_flight == 0


async def test_the_service_time_estimate_follows_finished_asks():
    a = Admission(AdmissionSettings(4, 4, initial_service_s=5.0, ewma_weight=0.5))
    async with a.slot("", Deadline(None)):
        pass
    # One ask of ~0 s halves the estimate; one failing fast does not lower it.
    assert a.service_s == pytest.approx(2.5, abs=0.05)
    with pytest.raises(RuntimeError):
        async with a.slot("", Deadline(None)):
            raise RuntimeError("backend down")
    assert a.service_s == pytest.approx(2.5, abs=0.05)


async def test_asks_cut_short_after_running_long_raise_the_estimate():
    now = [0.0]
    a = Admission(
        AdmissionSettings(4, 4, initial_service_s=5.0, ewma_weight=0.5), clock=lambda: now[0]
    )
    with pytest.raises(TimeoutError):
        async with a.slot("", Deadline(None)):
            now[0] += 65.0  # ran 65 s, then its caller's deadline passed
            raise TimeoutError
    # At least 65 s: half-way there with weight 0.5.
    assert a.service_s == pytest.approx(35.0)


async def test_a_deadline_passing_in_the_queue_is_not_worked_on():
    a = admission(in_flight=1, service_s=0.01)
    running = Held(a)
    await settle()
    with pytest.raises(DeadlineExceeded, match="nothing was worked on"):
        async with a.slot("", Deadline(0.1)):
            raise AssertionError("worked on")
    assert a.queued == 0
    running.release.set()
    await running.task


async def test_waiters_the_new_estimate_says_will_miss_are_refused_then():
    now = [0.0]
    a = Admission(
        AdmissionSettings(1, 10, initial_service_s=1.0, ewma_weight=1.0), clock=lambda: now[0]
    )
    running = Held(a)
    await settle()
    waiting = [Held(a, budget=8.0) for _ in range(3)]  # at 1 s an ask, all fit in 8 s
    await settle()
    assert a.queued == 3
    now[0] += 4.0  # the running ask took 4 s: at that pace only the first fits
    running.release.set()
    await settle()
    assert a.service_s == 4.0
    assert waiting[0].admitted.is_set()
    for h in waiting[1:]:
        with pytest.raises(ResourceExhausted, match="past its deadline"):
            await h.task
    assert a.queued == 0
    waiting[0].release.set()
    await asyncio.gather(running.task, waiting[0].task)


async def test_a_free_slot_is_refused_to_a_deadline_shorter_than_an_ask_while_busy():
    a = admission(in_flight=4, service_s=20.0)
    # Idle: the estimate may be stale, so the ask is tried.
    first = Held(a, budget=10.0)
    await settle()
    assert first.admitted.is_set()
    # Busy: asks take about 20 s, so one allowing 10 s is refused at once.
    with pytest.raises(ResourceExhausted, match="past its deadline"):
        async with a.slot("", Deadline(10.0)):
            raise AssertionError("worked on")
    second = Held(a, budget=60.0)
    await settle()
    assert second.admitted.is_set()
    for h in (first, second):
        h.release.set()
    await asyncio.gather(first.task, second.task)
