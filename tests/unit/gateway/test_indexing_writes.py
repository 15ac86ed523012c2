"""The indexing pipeline's writes in flight: at most `limit` groups at once, every
result kept, the first failure ends the request and the rest are cancelled."""

from __future__ import annotations

import asyncio

import pytest

from ragplane.gateway.indexing import _Writes
from ragplane.v1 import gateway_pb2


class Groups:
    """Writes that each wait for a release, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    def write(self, doc_id: str, fail: bool = False):
        async def run() -> list[gateway_pb2.DocumentResult]:
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await self.release.wait()
                if fail:
                    raise RuntimeError(f"{doc_id} failed")
                return [gateway_pb2.DocumentResult(doc_id=doc_id, chunks_written=1)]
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.running -= 1

        return run


async def test_at_most_limit_groups_run_and_every_result_is_kept():
    groups, results = Groups(), {}
    writes = _Writes(2, results)
    await writes.start(groups.write("a"))
    await writes.start(groups.write("b"))
    third = asyncio.create_task(writes.start(groups.write("c")))
    await asyncio.sleep(0.01)
    assert not third.done() and groups.running == 2  # waits for a free slot
    groups.release.set()
    await third
    await writes.finish()
    assert groups.most == 2
    assert sorted(results) == ["a", "b", "c"]


async def test_a_failed_write_is_raised_from_the_next_start():
    groups, results = Groups(), {}
    writes = _Writes(1, results)
    await writes.start(groups.write("a", fail=True))
    groups.release.set()
    with pytest.raises(RuntimeError, match="a failed"):
        await writes.start(groups.write("b"))


async def test_a_failed_write_is_raised_from_finish_and_the_rest_are_cancelled():
    groups, results = Groups(), {}
    writes = _Writes(4, results)
    failing = asyncio.Event()

    async def fails() -> list[gateway_pb2.DocumentResult]:
        await failing.wait()
        raise RuntimeError("embedder gone")

    await writes.start(groups.write("slow"))
    await writes.start(fails)
    failing.set()
    with pytest.raises(RuntimeError, match="embedder gone"):
        await writes.finish()
    await writes.cancel()
    assert groups.cancelled == 1 and groups.running == 0
    assert results == {}
