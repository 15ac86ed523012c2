"""Per-key request rate and concurrent streams, per-tenant storage: refusals are
RESOURCE_EXHAUSTED (HTTP 429) with a retry hint.

The counters are this replica's own (in memory): with N gateway replicas a key gets up
to N times its rate and streams; the chart divides the configured limits by the replica
count (docs/security.md). The storage limit is counted from the retriever, so it holds
across replicas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ragplane.config import env_float, env_int
from ragplane.errors import ResourceExhausted
from ragplane.gateway import metrics


@dataclass(frozen=True)
class QuotaSettings:
    """0 turns a limit off."""

    requests_per_second: float = 0.0
    burst: int = 0
    max_streams: int = 0
    max_tenant_chunks: int = 0

    @classmethod
    def from_env(cls) -> QuotaSettings:
        rate = env_float("RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND", 50.0, minimum=0.0)
        return cls(
            requests_per_second=rate,
            burst=env_int("RAGPLANE_GATEWAY_KEY_BURST", max(1, int(rate * 2)), minimum=1),
            max_streams=env_int("RAGPLANE_GATEWAY_KEY_MAX_STREAMS", 16, minimum=0),
            max_tenant_chunks=env_int("RAGPLANE_GATEWAY_TENANT_MAX_CHUNKS", 0, minimum=0),
        )


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._at = float(burst), now

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class Quotas:
    """The limits of one gateway replica. Not thread-safe: the event loop is its only user."""

    def __init__(self, settings: QuotaSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._streams: dict[str, int] = {}

    def admit_request(self, key_id: str, tenant: str) -> None:
        """Takes one of the key's requests; RESOURCE_EXHAUSTED over its rate."""
        rate = self.settings.requests_per_second
        if rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(rate, self.settings.burst, now)
        wait = bucket.take(now)
        if wait > 0:
            metrics.QUOTA_REFUSALS.labels(metrics.tenant_label(tenant), "rate").inc()
            raise ResourceExhausted(
                f"this API key is over its rate of {rate:g} requests a second; "
                f"retry in {wait:.2f} s",
                retry_after=wait,
            )

    def stream(self, key_id: str, tenant: str) -> StreamSlot:
        """Holds one of the key's concurrent streams while the `with` block runs."""
        return StreamSlot(self, key_id, tenant)

    def open_stream(self, key_id: str, tenant: str) -> None:
        """Takes one of the key's concurrent streams; RESOURCE_EXHAUSTED at its limit."""
        limit = self.settings.max_streams
        open_now = self._streams.get(key_id, 0)
        if limit and open_now >= limit:
            metrics.QUOTA_REFUSALS.labels(metrics.tenant_label(tenant), "streams").inc()
            raise ResourceExhausted(
                f"this API key has {open_now} answers streaming, its limit; retry when "
                "one has finished",
                retry_after=1.0,
            )
        self._streams[key_id] = open_now + 1

    def close_stream(self, key_id: str) -> None:
        left = self._streams[key_id] - 1
        if left:
            self._streams[key_id] = left
        else:
            del self._streams[key_id]

    def check_storage(self, tenant: str, stored: int, adding: int) -> None:
        """RESOURCE_EXHAUSTED when `adding` chunks would take the tenant past its limit."""
        limit = self.settings.max_tenant_chunks
        if limit and stored + adding > limit:
            metrics.QUOTA_REFUSALS.labels(metrics.tenant_label(tenant), "storage").inc()
            raise ResourceExhausted(
                f"this tenant stores {stored} chunks; {adding} more would pass its limit of "
                f"{limit}: delete documents or collections, or ask for a larger limit",
                # Space comes back only when something is deleted: not a quick retry.
                retry_after=60.0,
            )


class StreamSlot:
    """One of a key's concurrent streams, held for a `with` block. A class rather than a
    @contextmanager generator: every Ask takes one, and the generator's exit, with an
    exception thrown into it, was a tenth of the gateway's CPU per refused ask (py-spy,
    docs/reliability.md)."""

    __slots__ = ("_key_id", "_quotas", "_tenant")

    def __init__(self, quotas: Quotas, key_id: str, tenant: str) -> None:
        self._quotas, self._key_id, self._tenant = quotas, key_id, tenant

    def __enter__(self) -> None:
        self._quotas.open_stream(self._key_id, self._tenant)

    def __exit__(self, *exc: object) -> None:
        self._quotas.close_stream(self._key_id)
