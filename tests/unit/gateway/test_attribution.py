"""Markers the gateway adds where a passage supports a sentence the model left unmarked."""

from __future__ import annotations

import pytest

from ragplane.gateway.attribution import Attributor, supporting_passage, words
from ragplane.gateway.markers import check_markers

QUESTION = "How do I roll back a bad deploy of ledger-api?"
RUNBOOK = (
    "Rolling back. Run kctl rollback --service ledger-api --to previous. A rollback takes "
    "about two minutes and needs no approval; announce it in #deploys."
)
ROTATION = "The on-call rotation changes every Monday at 09:00 UTC; pages go to the primary."


def streamed(answer: str, passages: list[str], size: int, question: str = QUESTION):
    """The answer fed in deltas of `size` characters: the text sent, and what was added."""
    attributor = Attributor(question, passages)
    sent = [attributor.feed(answer[i : i + size]) for i in range(0, len(answer), size)]
    return "".join(sent) + attributor.finish(), attributor.attributed


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_a_supported_sentence_gets_its_passage_number_before_the_full_stop(size):
    answer = (
        "Run `kctl rollback --service ledger-api --to previous`. It takes about two "
        "minutes and needs no approval. The weather is nice today."
    )
    text, attributed = streamed(answer, [ROTATION, RUNBOOK], size)
    assert text == (
        "Run `kctl rollback --service ledger-api --to previous` [2]. It takes about two "
        "minutes and needs no approval [2]. The weather is nice today."
    )
    assert attributed == [2]
    assert check_markers(text, 2).cited == (2,)


def test_the_text_is_unchanged_but_for_the_markers():
    answer = "Pages go to the primary.\nThe rotation changes on Monday at 09:00 UTC! Done"
    text, attributed = streamed(answer, [ROTATION], 2, question="Who gets paged?")
    assert text.replace(" [1]", "") == answer
    assert attributed == [1]
    assert text == (
        "Pages go to the primary [1].\nThe rotation changes on Monday at 09:00 UTC [1]! Done"
    )


def test_sentences_the_model_marked_keep_their_markers_alone():
    answer = "Run kctl rollback --service ledger-api --to previous [1]. It takes two minutes."
    text, attributed = streamed(answer, [RUNBOOK], 4)
    assert text == (
        "Run kctl rollback --service ledger-api --to previous [1]. It takes two minutes [1]."
    )
    assert attributed == [1]


def test_no_marker_for_weak_support_abstention_or_fragments():
    passages = [RUNBOOK, ROTATION]
    for answer in (
        "I don't know.",
        "1. Roll back.",  # a list number, and a sentence that adds nothing to the question
        "You could ask the platform team about the ledger service budget.",
    ):
        text, attributed = streamed(answer, passages, 5)
        assert text == answer and attributed == []


def test_an_answer_without_a_final_full_stop_is_attributed_at_its_end():
    text, attributed = streamed("It takes about two minutes", [ROTATION, RUNBOOK], 3)
    assert text == "It takes about two minutes [2]" and attributed == [2]


def test_full_stops_inside_code_numbers_and_list_intros_end_no_sentence():
    answer = (
        "Set `a.b. c` to 2.5 minutes. Steps:\nrun kctl rollback --to previous\n"
        "Use ALTER SUBSCRIPTION ... SKIP to skip the rollback transaction."
    )
    passages = ["Set a.b c to 2.5 minutes for the rollback.", RUNBOOK, "ALTER SUBSCRIPTION SKIP"]
    text, _ = streamed(answer, passages, 1)
    assert text == (
        "Set `a.b. c` to 2.5 minutes [1]. Steps:\nrun kctl rollback --to previous [2]\n"
        "Use ALTER SUBSCRIPTION ... SKIP to skip the rollback transaction [3]."
    )


def test_support_is_what_the_sentence_adds_to_the_question():
    question = words("What is the default checkpoint_timeout?")
    pages = [words("checkpoint_timeout defaults to 5min"), words("default checkpoint_timeout")]
    # "default" and "checkpoint_timeout" echo the question; "5min" is the evidence.
    assert supporting_passage("The default checkpoint_timeout is 5min.", question, pages) == 1
    # Ties go to the higher-ranked passage; nothing new, no marker.
    assert supporting_passage("It is 5min.", question, [pages[0], pages[0]]) == 1
    assert supporting_passage("The default checkpoint_timeout.", question, pages) is None
    assert words("Minutes and the minute, Pages") == {"minute", "page"}
