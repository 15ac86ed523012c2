"""The streamed answer over HTTP: server-sent events carrying OpenAI chat completion
chunks (with the gateway's extra fields), decoded into the client's events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

from ragplane.client.errors import GatewayError, error_from_json
from ragplane.client.types import AskEvent, Citation, Citations, Delta, Finished, Timings, Usage


class SseDecoder:
    """Server-sent events, line by line: feed() returns an event's data when a blank line
    ends it, else None. Comments and fields other than data are skipped."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


class ChatStreamDecoder:
    """OpenAI chat completion chunks, with the gateway's extra fields (`citations` in the
    first, `abstained`, `abstain_reason`, `timings` and `usage` towards the end), as
    client events; finish() gives the Finished event once the stream is over."""

    def __init__(self) -> None:
        self._cited = False
        self._finish_reason: str | None = None
        self._last: dict[str, Any] = {}
        self._usage = Usage()

    def feed(self, chunk: dict[str, Any]) -> list[AskEvent]:
        if isinstance(chunk.get("error"), dict):
            # Failed after the response had begun (status 200 already sent).
            raise error_from_json(chunk["error"], "INTERNAL")
        events: list[AskEvent] = []
        if chunk.get("citations") is not None and not self._cited:
            self._cited = True
            events.append(Citations([citation_from_json(c) for c in chunk["citations"]]))
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                events.append(Delta(text))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self._usage = usage_from_json(chunk["usage"])
        for key in ("abstained", "abstain_reason", "timings", "unknown_names"):
            if chunk.get(key) is not None:
                self._last[key] = chunk[key]
        return events

    def finish(self) -> Finished:
        if self._finish_reason is None:
            raise GatewayError("UNAVAILABLE", "the answer stream ended before it finished")
        return _finished_from_json(self._finish_reason, self._usage, self._last)


def decode_sse(text: str) -> list[AskEvent]:
    """Every event of a whole SSE body (what HttpClient.ask yields from a stream)."""
    sse, chat = SseDecoder(), ChatStreamDecoder()
    events: list[AskEvent] = []
    for data in _sse_data(sse, text.splitlines() + [""]):
        if data == "[DONE]":
            break
        events.extend(chat.feed(_json_object(data)))
    events.append(chat.finish())
    return events


def _sse_data(sse: SseDecoder, lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        data = sse.feed(line)
        if data is not None:
            yield data


def citation_from_json(c: dict[str, Any]) -> Citation:
    return Citation(
        index=int(c.get("index", 0)),
        doc_id=str(c.get("doc_id", "")),
        title=str(c.get("title", "")),
        source=str(c.get("source", "")),
        section=str(c.get("section", "")),
        chunk_id=str(c.get("chunk_id", "")),
        score=float(c.get("score") or 0.0),
        collection=str(c.get("collection", "")),
        text=str(c.get("text", "")),
        relevance=float(c.get("relevance") or 0.0),
    )


def usage_from_json(u: dict[str, Any]) -> Usage:
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def _finished_from_json(finish_reason: str, usage: Usage, last: dict[str, Any]) -> Finished:
    reason = last.get("abstain_reason") or None
    timings = {k: float(v) for k, v in (last.get("timings") or {}).items() if k in TIMING_KEYS}
    return Finished(
        finish_reason="length" if finish_reason == "length" else "stop",
        usage=usage,
        abstained=bool(last.get("abstained")) or reason is not None,
        abstain_reason=str(reason).lower() if reason else None,
        timings=Timings(**timings),
        unknown_names=tuple(last.get("unknown_names") or ()),
    )


TIMING_KEYS = frozenset(asdict(Timings()))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise GatewayError("INTERNAL", f"the gateway sent invalid JSON: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise GatewayError("INTERNAL", f"the gateway sent {type(value).__name__}, not an object")
    return value
