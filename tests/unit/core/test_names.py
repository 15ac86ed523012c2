"""Names in a question (ragplane.names): what the gateway asks the retriever's names check
about, and the identifiers the retriever ranks by."""

from __future__ import annotations

from ragplane.names import identifier_terms, named_terms


def test_names_are_identifiers_numbers_and_capitalised_words():
    assert named_terms("What is the default port of MongoDB?") == ["MongoDB"]
    assert named_terms("Which condition name does PostgreSQL use for SQLSTATE 40P01?") == [
        "PostgreSQL",
        "SQLSTATE",
        "40P01",
    ]
    assert named_terms("What does setting wal_level to logical add?") == ["wal_level"]
    assert named_terms("What is the Wi-Fi password for guests?") == ["Wi-Fi"]


def test_common_words_bare_numbers_and_the_first_word_are_not_names():
    assert named_terms("How do I shrink a bloated table?") == []
    assert named_terms("What does exit status 2 mean for SQLSTATE 23505?") == ["SQLSTATE"]
    assert named_terms("We run Patroni. How does failover work? Is it safe!") == ["Patroni"]
    assert named_terms("Which team owns ledger-api?") == []


def test_month_and_weekday_names_are_not_names():
    # Documents write dates as 2026-02-11: "February" named nothing a search could find.
    assert named_terms("What caused error LEDG-5012 during the February outage?") == ["LEDG-5012"]
    assert named_terms("Why is the Friday deploy freeze at 15:00 in Europe?") == ["Europe"]


def test_flags_are_names_without_their_dashes():
    assert named_terms("What does pg_dump --no-owner do?") == ["pg_dump", "no-owner"]


def test_identifiers_are_underscored_words_codes_flags_and_compounds_not_other_names():
    assert identifier_terms("What caused error LEDG-5012 during the February outage?") == [
        "LEDG-5012"
    ]
    assert identifier_terms("Does pg_dump --no-owner -j 4 work on PostgreSQL 15?") == [
        "pg_dump",
        "no-owner",
    ]
    assert identifier_terms("What does SQLSTATE 40P01 mean, and 2.5 or 23505?") == ["40P01"]
    assert identifier_terms("What does Wi-Fi on 2026-02-11 cost?") == []


def test_lowercase_compounds_rank_but_are_not_names():
    # A service name or plain English (read-only): chunks that use it rank first, but a
    # context that says "read only" is no reason to turn the question away.
    assert identifier_terms("Which team owns ledger-api?") == ["ledger-api"]
    assert identifier_terms("How do I get read-only access to pg-ledger?") == [
        "read-only",
        "pg-ledger",
    ]
    assert named_terms("How do I get read-only access to pg-ledger?") == []
    # A flag is an identifier, not a compound.
    assert identifier_terms("Is pg_dump --no-owner read-only?", compounds=False) == [
        "pg_dump",
        "no-owner",
    ]
