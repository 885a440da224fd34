"""Issue 16, analysts' queries at speed: same answers, a migration that keeps every row.

A small set from the benchmark's in-engine generator (:mod:`bench.query_data`: touches,
redeliveries under an absorbed person, superseded journey and credit versions) is
written into a real chDB engine at the schema before migration 0008. Then:

* the migration adds the person projection to touchpoints without losing or changing a
  row of any table, and a lightweight delete (``journeys forget``) still works;
* every ``queries/*.sql`` gives the same rows as its version before the rewrite (kept in
  ``tests/fixtures/queries_before_16``), with the analysts' settings and without,
  except for the documented fixes (12's top channels, exact now);
* the read-only profile keeps partition pruning exact: no row's versions span two
  partitions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.query_data import generate
from sinks.clickhouse import (
    ANALYST_SETTINGS,
    PARTITION_KEYS,
    SHARDED_TABLES,
    LockedClient,
    connect,
    migrate,
)
from sinks.report.sql import QueryFile, bind, load_query_files
from tests.conftest import REPO

QUERIES = REPO / "queries"
BEFORE = REPO / "tests" / "fixtures" / "queries_before_16"
MONTH = {"since": "2025-03-01", "until": "2025-04-01"}
TABLES = ("touchpoints", "journeys", "attribution", "identities", "identity_merges")
#: Columns a rewrite changed on purpose: 12's top channels were any() picks; 17 counts an
#: event's person from its newest row (FINAL) where any() took an arbitrary one.
FIXED = {
    "12_new_vs_returning": {"top_first_channels", "top_last_channels"},
    "17_peak_times": {"people"},
}
PERSON = "p42"


def _columns(client: LockedClient) -> dict[str, list[str]]:
    """Per table, its columns now (a later migration may add some: 0009's is_deleted)."""
    out: dict[str, list[str]] = {}
    for table in TABLES:
        _, rows = client.query_rows(
            "SELECT name FROM system.columns WHERE database = 'journeys' "
            f"AND table = '{table}' ORDER BY position"
        )
        out[table] = [str(r[0]) for r in rows]
    return out


def _snapshot(client: LockedClient, columns: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Per table: the row count and a digest of every row as analysts see it (FINAL: a
    merge the migration's rewrite of parts runs may drop replaced rows early), over the
    columns the table had before the migrations."""
    out = {}
    for table in TABLES:
        names = ", ".join(columns[table])
        body = client.raw_query(
            f"SELECT {names} FROM journeys.{table} FINAL ORDER BY ALL FORMAT TSV"
        )
        out[table] = (body.count(b"\n"), hashlib.sha256(body).hexdigest())
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = Path(tmp_path_factory.mktemp("speed")) / "clickhouse"
    client = connect(f"chdb://{path}")
    client.command("SYSTEM STOP VIEWS")
    try:
        older = migrate(client, "journeys", before=8)
        assert older and all(int(name[:4]) < 8 for name in older)
        generate(client.command, "journeys", 60_000, chunk=20_000, facts=False)
        columns = _columns(client)
        before = _snapshot(client, columns)
        applied = migrate(client, "journeys")
        yield {"client": client, "before": before, "applied": applied, "columns": columns}
    finally:
        client.close()


def test_the_migration_keeps_every_row(db: dict[str, Any]) -> None:
    client: LockedClient = db["client"]
    assert "0008_query_speed.sql" in db["applied"]
    before, after = db["before"], _snapshot(client, db["columns"])
    assert before["touchpoints"][0] == 60_000 - 60_000 % 6
    assert after == before


def test_the_projection_covers_every_part_and_serves_person_lookups(db: dict[str, Any]) -> None:
    client: LockedClient = db["client"]
    _, rows = client.query_rows(
        "SELECT p.rows, parts.rows FROM system.parts AS parts "
        "LEFT JOIN (SELECT parent_name, rows FROM system.projection_parts "
        "           WHERE database = 'journeys' AND table = 'touchpoints' "
        "             AND name = 'by_person' AND active) AS p "
        "ON p.parent_name = parts.name "
        "WHERE parts.database = 'journeys' AND parts.table = 'touchpoints' AND parts.active"
    )
    assert rows and all(int(a) == int(b) for a, b in rows), rows
    # The set is so small that reading the table costs the planner no more: ask for the
    # projection's own order, and fail unless the projection answers.
    ids = client.raw_query(
        f"SELECT event_id FROM journeys.touchpoints WHERE person_id = '{PERSON}' "
        "ORDER BY person_id, occurred_at FORMAT TSV",
        settings={"force_optimize_projection_name": "by_person"},
    )
    assert ids.strip()


OLD_CURRENT = (
    "SELECT * FROM journeys.attribution FINAL WHERE (conversion_event_id, version) IN "
    "(SELECT conversion_event_id, max(version) FROM journeys.attribution "
    "GROUP BY conversion_event_id) ORDER BY ALL FORMAT TSV"
)


def test_attribution_current_keeps_the_rows_of_its_old_definition(db: dict[str, Any]) -> None:
    """0008 finds each conversion's latest version in attribution_reattributed (filled
    from the populated table, then by every insert) instead of all of attribution."""
    client: LockedClient = db["client"]
    new = client.raw_query("SELECT * FROM journeys.attribution_current ORDER BY ALL FORMAT TSV")
    assert new == client.raw_query(OLD_CURRENT)
    _, rows = client.query_rows(
        "SELECT (SELECT count() FROM journeys.attribution FINAL), "
        "(SELECT count() FROM journeys.attribution_current), "
        "(SELECT count() FROM journeys.attribution_reattributed)"
    )
    final, current, reattributed = (int(x) for x in rows[0])
    assert reattributed > 0 and final > current  # superseded rows FINAL keeps are dropped
    # a new version written after the migration goes through the view
    _, one = client.query_rows(
        "SELECT conversion_event_id, journey_id, person_id, converted_at "
        "FROM journeys.attribution WHERE version = 1 ORDER BY ALL LIMIT 1"
    )
    event, journey, person, at = one[0]
    columns = ("conversion_event_id", "journey_id", "person_id", "model", "channel", "credit",
               "revenue_credit", "converted_at", "version")  # fmt: skip
    client.insert(
        "attribution",
        [(event, journey, person, "linear", "sms", 1.0, 10.0, at, 7)],
        columns,
        "journeys",
    )
    new = client.raw_query("SELECT * FROM journeys.attribution_current ORDER BY ALL FORMAT TSV")
    assert new == client.raw_query(OLD_CURRENT)
    _, mine = client.query_rows(
        "SELECT model, channel, version FROM journeys.attribution_current "
        f"WHERE conversion_event_id = '{event}'"
    )
    assert [tuple(r) for r in mine] == [("linear", "sms", 7)]


MESSAGING = (
    "SELECT event_id, source, person_id, channel, event_type, occurred_at FROM journeys.{t} "
    "FINAL WHERE channel IN ('email', 'sms') AND source IN ('sendgrid', 'twilio') "
    "ORDER BY ALL FORMAT TSV"
)


def test_messaging_events_mirror_the_email_and_sms_touchpoints(db: dict[str, Any]) -> None:
    """0012 copies the SendGrid and Twilio rows written before it, and its view every
    insert after it: the narrow table answers as touchpoints FINAL does, row for row."""
    client: LockedClient = db["client"]
    assert "0012_messaging_events.sql" in db["applied"]
    old = client.raw_query(MESSAGING.format(t="touchpoints"))
    assert old.count(b"\n") > 1000
    assert client.raw_query(MESSAGING.format(t="messaging_events")) == old
    # a newer row of one event (forwarded to another person) and a web event, inserted now
    _, one = client.query_rows(
        "SELECT * FROM journeys.touchpoints WHERE source = 'sendgrid' ORDER BY event_id LIMIT 1"
    )
    _, names = client.query_rows(
        "SELECT name FROM system.columns WHERE database = 'journeys' AND table = 'touchpoints' "
        "ORDER BY position"
    )
    columns = [str(r[0]) for r in names]
    row = dict(zip(columns, one[0], strict=True))
    forwarded = {**row, "person_id": "p-survivor", "ingested_at": datetime.now(UTC)}
    web = {**row, "event_id": "web-1", "source": "segment", "channel": "direct"}
    client.insert(
        "touchpoints", [tuple(r[c] for c in columns) for r in (forwarded, web)], columns, "journeys"
    )
    new = client.raw_query(MESSAGING.format(t="touchpoints"))
    assert new != old and b"p-survivor" in new
    assert client.raw_query(MESSAGING.format(t="messaging_events")) == new


def _exact_lookup(person: str) -> str:
    """docs/analysts.md: one person's touchpoints, exact, through the projection."""
    return (
        "SELECT event_id, occurred_at, channel FROM ("
        " SELECT event_id, occurred_at, channel, person_id FROM journeys.touchpoints"
        f" WHERE event_id IN (SELECT event_id FROM journeys.touchpoints"
        f"                    WHERE person_id = '{person}')"
        " ORDER BY ingested_at DESC LIMIT 1 BY event_id)"
        f" WHERE person_id = '{person}' ORDER BY event_id FORMAT TSV"
    )


def test_exact_person_lookup_equals_final(db: dict[str, Any]) -> None:
    client: LockedClient = db["client"]
    _, rows = client.query_rows(
        "SELECT DISTINCT person_id FROM journeys.touchpoints WHERE person_id LIKE 'q%' LIMIT 5"
    )
    absorbed = [str(r[0]) for r in rows]
    assert absorbed, "the generator writes older copies under absorbed persons"
    for person in [PERSON, *absorbed, *("p" + p[1:] for p in absorbed)]:
        final = client.raw_query(
            "SELECT event_id, occurred_at, channel FROM journeys.touchpoints FINAL "
            f"WHERE person_id = '{person}' ORDER BY event_id FORMAT TSV",
            settings={"use_skip_indexes_if_final": 0},
        )
        assert client.raw_query(_exact_lookup(person)) == final, person


def _rows(client: LockedClient, sql: str, settings: dict[str, Any]) -> list[list[str]]:
    body = client.raw_query(sql + "\nFORMAT TSVWithNames", settings=settings).decode()
    return [line.split("\t") for line in body.splitlines()]


def same_cell(a: str, b: str) -> bool:
    """Equal cells; numbers may differ by one unit of their rounding (float sums)."""
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    decimals = max(len(s.partition(".")[2]) for s in (a, b))
    return math.isclose(x, y, abs_tol=1.01 * 10.0**-decimals)


def _compare(
    client: LockedClient, old: QueryFile, new: QueryFile, settings: dict[str, Any]
) -> None:
    params = [{}, {k: v for k, v in MONTH.items() if k in new.params}]
    for values in params:
        before = _rows(client, bind(old, values), settings)
        after = _rows(client, bind(new, values), settings)
        assert after[0] == before[0], f"{new.name}: columns changed"
        assert len(after) == len(before), f"{new.name} {values}: row count"
        assert len(after) > 1, f"{new.name} {values}: no rows to compare"
        skip = FIXED.get(new.name, set())
        for row_a, row_b in zip(before[1:], after[1:], strict=True):
            for name, a, b in zip(before[0], row_a, row_b, strict=True):
                if name not in skip:
                    assert same_cell(a, b), f"{new.name} {values}: {name} {a!r} -> {b!r}"


@pytest.mark.parametrize("name", [qf.name for qf in load_query_files(BEFORE)])
def test_each_query_answers_as_before(db: dict[str, Any], name: str) -> None:
    client: LockedClient = db["client"]
    client.command("SYSTEM REFRESH VIEW journeys.daily_channel_credit_mv")
    client.command("SYSTEM WAIT VIEW journeys.daily_channel_credit_mv")
    new = next(qf for qf in load_query_files(QUERIES) if qf.name == name)
    old = next(qf for qf in load_query_files(BEFORE) if qf.name == name)
    settings = {k: v for k, v in ANALYST_SETTINGS.items() if k != "readonly"}
    _compare(client, old, new, {})  # the old SQL, as it ran before
    _compare(client, old, new, settings)  # and with the analysts' settings


def test_top_channels_are_the_exact_top_three(db: dict[str, Any]) -> None:
    client: LockedClient = db["client"]
    new = next(qf for qf in load_query_files(QUERIES) if qf.name == "12_new_vs_returning")
    rows = _rows(client, bind(new, {}), {})
    _, counts = client.query_rows(
        "SELECT path[1] AS c, count() AS n FROM journeys.journeys FINAL WHERE converted "
        "GROUP BY c ORDER BY n DESC, c"
    )
    total = {str(c): int(n) for c, n in counts}
    for row in rows[1:]:
        top = row[rows[0].index("top_first_channels")].split(", ")
        assert len(top) == 3 and len(set(top)) == 3 and set(top) <= set(total)
    both = [r for r in rows[1:]]
    assert both


def test_every_version_of_a_row_shares_its_partition(db: dict[str, Any]) -> None:
    client: LockedClient = db["client"]
    for table in PARTITION_KEYS:
        key = SHARDED_TABLES[table]
        _, rows = client.query_rows(
            f"SELECT count() FROM (SELECT {key} FROM journeys.{table} "
            f"GROUP BY {key} HAVING uniqExact(_partition_id) > 1)"
        )
        assert int(rows[0][0]) == 0, table


def test_forget_still_deletes_through_the_projection(db: dict[str, Any]) -> None:
    """Last: it deletes a person (lightweight delete, as ``journeys forget``)."""
    client: LockedClient = db["client"]
    assert client.raw_query(_exact_lookup(PERSON)).strip()
    client.command(
        "DELETE FROM journeys.touchpoints WHERE person_id IN {ps:Array(String)}", {"ps": [PERSON]}
    )
    assert not client.raw_query(_exact_lookup(PERSON)).strip()
    _, rows = client.query_rows(
        f"SELECT count() FROM journeys.touchpoints WHERE person_id = '{PERSON}'"
    )
    assert int(rows[0][0]) == 0
