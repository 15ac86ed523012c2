"""The loop detector: stops answers that repeat a step, a sentence or a word, and none
that merely reuse words."""

from __future__ import annotations

import pytest

from ragplane.generator.repetition import (
    Loop,
    RepetitionDetector,
    RepetitionPolicy,
    find_loop,
    tail_loop,
)

ANSWER = (
    "Roll back with `kctl rollback --service ledger-api --to previous` [1]. Then check "
    "the dashboard for the ledger-api error rate, and page the on-call engineer if the "
    "error rate stays above 2% for ten minutes [2]. The rollback keeps the database "
    "schema; roll the schema back separately with the migration tool [1]."
)
# SmolLM2-135M on the demo question before this detector: the same step until max_tokens.
LOOPING = "To roll back a bad deploy, run the command. " + (
    "Run `kube-config rollback --service ledger-api` to roll back the service. " * 8
)


def test_a_normal_answer_has_no_loop():
    assert find_loop(ANSWER) is None
    # Lists reuse their words without repeating a whole run of them three times.
    listing = " ".join(f"- Step {i}: check service {n}." for i, n in enumerate("abcdefgh"))
    assert find_loop(listing) is None


def test_a_repeated_step_is_found_once_it_has_three_copies():
    loop = find_loop(LOOPING)
    assert loop == Loop(period=10, repeats=3)


def test_numbers_are_masked_so_numbered_copies_repeat():
    text = " ".join(f"Step {i}: restart the ledger-api pods and wait." for i in range(1, 6))
    assert find_loop(text) == Loop(period=8, repeats=3)


def test_a_short_phrase_must_cover_min_words():
    policy = RepetitionPolicy()
    assert tail_loop(["very"] * 3, policy) is None
    assert tail_loop(["very"] * (policy.min_words - 1), policy) is None
    assert tail_loop(["very"] * policy.min_words, policy) == Loop(1, policy.min_words)


def test_deltas_split_inside_words_are_joined():
    detector = RepetitionDetector()
    pieces = [LOOPING[i : i + 3] for i in range(0, len(LOOPING), 3)]
    found = [detector.feed(p) for p in pieces]
    stop_at = next(i for i, loop in enumerate(found) if loop)
    # It stops within the fourth copy, not at the end of the text, and stays stopped.
    assert 0 < stop_at < len(pieces) - 1
    assert all(found[stop_at:])
    assert detector.loop == Loop(10, 3)


@pytest.mark.parametrize("repeats", [2, 4])
def test_the_policy_sets_the_copies_needed(repeats: int):
    policy = RepetitionPolicy(min_repeats=repeats, min_words=1)
    unit = ["roll", "back", "now."]
    assert tail_loop(unit * (repeats - 1), policy) is None
    assert tail_loop(unit * repeats, policy) == Loop(3, repeats)
