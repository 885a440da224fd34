"""``identities`` keeps the newest change in processing order, on the real engine (chDB).

* A late event re-derives a person: its MERGE / ``reorder`` MAP carries an older event
  time than the MAP it supersedes, and ``identities FINAL`` still shows the graph's
  person (it did not while the table was versioned by event time).
* Migration 0005 rebuilds a populated table of the old shape and repairs the
  identifiers that a MERGE moved away from the person their newest row names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.identity import IdentityChange, IdentityGraph
from pipeline.core.model import Identifier
from sinks.clickhouse import (
    IDENTITIES_COLUMNS,
    IDENTITY_MERGES,
    LockedClient,
    connect,
    identity_rows,
    load_migrations,
    migrate,
)

Event = tuple[list[Identifier], str, int]

# A late login (event time 1 s) links a user id to an e-mail first seen then, after an
# anonymous visit (2 s) and a login from it (3 s): the person is renamed after the
# e-mail and the older MAPs are superseded by a MERGE with event time 1 s.
RENAME: list[Event] = [
    ([Identifier("anonymous_id", "x")], "visit", 2_000),
    ([Identifier("anonymous_id", "x"), Identifier("user_id", "u")], "login", 3_000),
    ([Identifier("user_id", "u"), Identifier("email_sha256", "e" * 64)], "late-login", 1_000),
]
# A kiosk: u2 is refused the device at 3 s, then a copy of that event 2 s older arrives;
# re-derived in event-time order the device and the anonymous id that came through it
# move from u1 to u2 with a reorder MAP at 1 s, and u1 stays a live person.
KIOSK: list[Event] = [
    ([Identifier("device_id", "d"), Identifier("user_id", "u1")], "k1", 2_000),
    ([Identifier("device_id", "d"), Identifier("anonymous_id", "a")], "k2", 2_500),
    ([Identifier("device_id", "d"), Identifier("user_id", "u2")], "k3", 3_000),
    ([Identifier("device_id", "d"), Identifier("user_id", "u2")], "k0", 1_000),
]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def changes_of(events: Sequence[Event]) -> tuple[IdentityGraph, list[dict[str, Any]]]:
    graph = IdentityGraph()
    out: list[IdentityChange] = []
    for identifiers, event_id, at in events:
        out.extend(graph.resolve(identifiers, event_id, at).changes)
    return graph, [c.to_record() for c in out]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[LockedClient]:
    ch = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        yield ch
    finally:
        ch.close()


def current(client: LockedClient) -> dict[str, str]:
    _, rows = client.query_rows(
        "SELECT identifier_type, identifier_value, person_id FROM journeys.identities FINAL"
    )
    return {f"{t}:{v}": str(p) for t, v, p in rows}


def by_event_time(client: LockedClient) -> dict[str, str]:
    """What a table versioned by event time shows: the newest row by ``updated_at``."""
    _, rows = client.query_rows(
        "SELECT identifier_type, identifier_value, argMax(person_id, updated_at) "
        "FROM journeys.identities GROUP BY identifier_type, identifier_value"
    )
    return {f"{t}:{v}": str(p) for t, v, p in rows}


@pytest.mark.parametrize("events", [RENAME, KIOSK], ids=["rename-merge", "kiosk-reorder"])
def test_a_change_with_an_older_event_time_wins_when_it_is_newer(
    client: LockedClient, events: list[Event]
) -> None:
    migrate(client, "journeys")
    graph, records = changes_of(events)
    assert any(r["rule"] == "reorder" or r["kind"] == "MERGE" for r in records)
    versions = [r["version"] for r in records]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    # One insert per change, in processing order, as the sink's batches arrive.
    for record in records:
        rows = identity_rows(record)
        if rows:
            client.insert("identities", rows, IDENTITIES_COLUMNS, "journeys")
    truth = graph.partition()
    assert current(client) == truth
    assert by_event_time(client) != truth  # event time alone picks a superseded person
    client.command("OPTIMIZE TABLE journeys.identities FINAL")
    assert current(client) == truth
    # The same rows inserted in reverse order change nothing: versions, not arrival.
    client.command("TRUNCATE TABLE journeys.identities")
    for record in reversed(records):
        rows = identity_rows(record)
        if rows:
            client.insert("identities", rows, IDENTITIES_COLUMNS, "journeys")
    assert current(client) == truth


OLD_COLUMNS = tuple(c for c in IDENTITIES_COLUMNS if c != "version")


def test_migration_0005_rebuilds_and_repairs_a_populated_table(
    client: LockedClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [m for m in load_migrations() if m.version < 5]
    monkeypatch.setattr("sinks.clickhouse.load_migrations", lambda: before)
    migrate(client, "journeys")
    # Data written before versions existed: v1 records (no version), both tables.
    graph, records = changes_of(RENAME)
    bystander, others = changes_of(
        [([Identifier("user_id", "solo"), Identifier("anonymous_id", "s")], "solo", 5_000)]
    )
    for record in [*records, *others]:
        del record["version"]
        rows = [r[:5] + r[6:] for r in identity_rows(record)]
        if rows:
            client.insert("identities", rows, OLD_COLUMNS, "journeys")
        merge = IDENTITY_MERGES.row(record, 0, 0, NOW)
        client.insert("identity_merges", [merge], IDENTITY_MERGES.columns, "journeys")
    client.command("OPTIMIZE TABLE journeys.identities FINAL")  # merges drop old rows
    truth = {**graph.partition(), **bystander.partition()}
    stale = current(client)
    assert stale != truth and {k for k in truth if stale[k] != truth[k]} == {
        "anonymous_id:x",
        "user_id:u",
    }

    monkeypatch.undo()
    assert migrate(client, "journeys")[0] == "0005_identity_versions.sql"  # and any later
    assert migrate(client, "journeys") == []
    assert current(client) == truth
    _, engine = client.query_rows(
        "SELECT engine_full FROM system.tables WHERE database = 'journeys' AND name = 'identities'"
    )
    assert str(engine[0][0]).startswith("ReplacingMergeTree(version, is_deleted)")
    _, rows = client.query_rows(
        "SELECT identifier_value, rule, version FROM journeys.identities FINAL "
        "ORDER BY identifier_value"
    )
    assert {(str(v), str(r), int(n)) for v, r, n in rows} == {
        ("e" * 64, "deterministic:user_id", 0),
        ("s", "deterministic:user_id", 0),
        ("solo", "deterministic:user_id", 0),
        ("u", "repair:0005", 0),
        ("x", "repair:0005", 0),
    }
    _, tables = client.query_rows("SELECT name FROM system.tables WHERE database = 'journeys'")
    assert "identities_0005" not in {t[0] for t in tables}
    # A change made after the upgrade (version >= 1) supersedes a repaired row.
    moved = {**records[0], "person_id": "someone-else", "version": 1, "at": NOW}
    client.insert("identities", identity_rows(moved), IDENTITIES_COLUMNS, "journeys")
    assert current(client)["anonymous_id:x"] == "someone-else"
