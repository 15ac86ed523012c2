"""The answer's `[n]` citation markers, checked against the passages the model was given.

The prompt numbers its passages [1]..[k] and asks the model to cite them so. A small
model also writes numbers that point at no passage ([4] of three, [0]): the finished
event names those apart, so a caller can flag or drop them. The streamed text is never
rewritten; its deltas are already on their way when the answer ends. (The gateway may
add markers the model left out, attribution.py; they are checked here like the rest.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# [1], [2, 3], [1][2] (two markers) and [1; 2]; not [1-3], [a] or [1.5].
MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")


@dataclass(frozen=True)
class MarkerCheck:
    """The passages an answer cites, in order of first mention, and the numbers it
    writes in markers that point at no passage."""

    cited: tuple[int, ...] = ()
    invalid: tuple[int, ...] = ()


def marker_numbers(answer: str) -> list[int]:
    """Every number in the answer's markers, in order of first mention, once each."""
    seen: dict[int, None] = {}
    for match in MARKER.finditer(answer):
        for number in re.split(r"\s*[,;]\s*", match.group(1).strip()):
            seen.setdefault(int(number), None)
    return list(seen)


def check_markers(answer: str, passages: int) -> MarkerCheck:
    """Splits the answer's marker numbers into passages 1..`passages` and the rest."""
    numbers = marker_numbers(answer)
    return MarkerCheck(
        cited=tuple(n for n in numbers if 1 <= n <= passages),
        invalid=tuple(n for n in numbers if not 1 <= n <= passages),
    )
