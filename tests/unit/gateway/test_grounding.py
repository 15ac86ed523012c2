"""Names in a question: the gateway's names check (which of them the retrieved context
does not mention) and the identifiers the retriever ranks by. The corpus lookups of the
names the context misses are the retriever's (tests/unit/retriever/test_names_check.py)."""

from __future__ import annotations

from ragplane.gateway.grounding import missing_terms
from ragplane.names import identifier_terms, named_terms
from ragplane.v1 import common_pb2


def hit(text: str, title: str = "", section: str = "") -> common_pb2.ScoredChunk:
    return common_pb2.ScoredChunk(chunk=common_pb2.Chunk(text=text, title=title, section=section))


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


def test_a_name_no_hit_mentions_is_missing():
    hits = [hit("PostgreSQL listens on port 5432.", title="Connections")]
    assert missing_terms("What is the default port of MongoDB?", hits) == ["MongoDB"]
    assert missing_terms("Which port does PostgreSQL use?", hits) == []


def test_names_match_across_case_punctuation_title_and_section():
    hits = [hit("Set max_wal_senders first.", section="Streaming Replication")]
    assert missing_terms("What limits Max-Wal-Senders in Streaming replication?", hits) == []
    assert missing_terms("What is WAL?", [hit("the wal")]) == []


def test_no_hits_leave_every_name_missing():
    assert missing_terms("Is CockroachDB supported?", []) == ["CockroachDB"]


def test_a_table_qualified_column_is_mentioned_by_its_parts():
    hits = [hit("relpersistence: p = permanent table, u = unlogged table", title="pg_class")]
    assert missing_terms("What does u in pg_class.relpersistence mean?", hits) == []
    assert missing_terms("When is PGConf.EU held?", [hit("PGConf and the EU")]) == ["PGConf.EU"]
