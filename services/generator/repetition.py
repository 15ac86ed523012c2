"""Stops a generation that loops: small models on greedy decoding repeat a step, a
sentence or a word until max_tokens. The detector reads the streamed text (both backends
give text), so the same rule holds in-process and behind an OpenAI-compatible server.

A loop is the output's tail made of the same run of words, `min_repeats` or more times
in a row, together at least `min_words` words long: three copies of a ten-word step, or
twenty-four of one word. Words compare lowercased with their digits masked, so "Step 4:
run the job. Step 5: run the job." repeats. The thresholds were set on real answers
(docs/models.md): no answer that ended by itself repeated so, and the answers that ran
to max_tokens did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class RepetitionPolicy:
    # Longest repeated run of words looked for (a long step of a runbook).
    max_period: int = 40
    # Copies in a row at the end of the output.
    min_repeats: int = 3
    # Words the copies cover together: a short phrase must repeat more often.
    min_words: int = 24


@dataclass(frozen=True)
class Loop:
    """A loop found at the output's tail: `period` words, `repeats` times."""

    period: int
    repeats: int


def _normal(word: str) -> str:
    return _DIGITS.sub("#", word.lower())


def tail_loop(words: list[str], policy: RepetitionPolicy) -> Loop | None:
    """The shortest run of words that ends `words` and repeats there as the policy says."""
    n = len(words)
    for period in range(1, policy.max_period + 1):
        if period * policy.min_repeats > n:
            return None  # no longer period fits either
        repeats = max(policy.min_repeats, -(-policy.min_words // period))
        if period * repeats > n:
            continue
        unit = words[n - period :]
        if all(words[n - (k + 1) * period : n - k * period] == unit for k in range(1, repeats)):
            while (repeats + 1) * period <= n and words[
                n - (repeats + 1) * period : n - repeats * period
            ] == unit:
                repeats += 1
            return Loop(period, repeats)
    return None


class RepetitionDetector:
    """Fed a generation's text deltas in order; says when the output has started to loop.
    Only whole words count: a delta may end inside one."""

    def __init__(self, policy: RepetitionPolicy | None = None) -> None:
        self.policy = policy or RepetitionPolicy()
        self._words: list[str] = []
        self._partial = ""
        self.loop: Loop | None = None

    def feed(self, delta: str) -> Loop | None:
        """Adds a delta; the loop once one is found (and from then on)."""
        if self.loop is not None:
            return self.loop
        text = self._partial + delta
        words = _WORD.findall(text)
        if words and not text[-1].isspace():
            self._partial = words.pop()
        else:
            self._partial = ""
        if words:
            self._words.extend(_normal(w) for w in words)
            self.loop = tail_loop(self._words, self.policy)
        return self.loop


def find_loop(text: str, policy: RepetitionPolicy | None = None) -> Loop | None:
    """The loop at the end of a whole text, as the detector would find it when streamed
    (the last word counts as complete)."""
    detector = RepetitionDetector(policy)
    for word in _WORD.findall(text):
        if loop := detector.feed(word + " "):
            return loop
    return None
