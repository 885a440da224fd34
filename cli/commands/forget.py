"""``journeys forget``: erase one person everywhere (a data-subject erasure request)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cli.commands._common import console, fail, settings
from cli.commands._help import HelpFormatter

EPILOG = """examples:
  journeys forget --email jane.doe@example.org
  journeys forget --user-id u-1842 --timeout 120
  journeys forget --person-id 5d0c2a4e-...

The e-mail address or phone number is hashed here, as the connectors hash it; only the
hash leaves this process. The request goes to the identity owner through Kafka, so the
worker and the sink must be running (`journeys run`). The owner erases the person's
identifiers from the identity graph and tombstones its key in the compacted
identity-changes topic; the journey stage and the audiences agent drop the person's
state; the sink deletes the person's rows (and those of persons it absorbed) from
touchpoints (and their e-mail and SMS copy, messaging_events), journeys, attribution,
identities, identity_merges, persons, segment_membership and audience_changes with
lightweight deletes, and the dead letters that hold one of its hashed e-mails or
phones. The command then prints what was removed, table by table.
"""

#: (table, column that names the person)
TABLES = (
    ("touchpoints", "person_id"),
    ("messaging_events", "person_id"),
    ("journeys", "person_id"),
    ("attribution", "person_id"),
    ("identities", "person_id"),
    ("identity_merges", "person_id"),
    ("persons", "person_id"),
    ("segment_membership", "person_id"),
    ("audience_changes", "person_id"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forget",
        help="erase a person's identifiers and rows everywhere",
        description="Erase one person: identity graph, journey state, ClickHouse rows.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="an e-mail address of the person (hashed here)")
    who.add_argument("--phone", help="a phone number of the person (hashed here)")
    who.add_argument("--user-id", help="the person's user_id")
    who.add_argument("--loyalty-id", help="a loyalty card id of the person")
    who.add_argument("--person-id", help="the Journeys person id")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the erasure (60)"
    )
    p.set_defaults(func=run)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.core.pii import hash_email, hash_phone

    if args.person_id:
        return {"person_id": args.person_id}
    if args.email:
        return {"identifier": {"type": "email_sha256", "value": hash_email(args.email)}}
    if args.phone:
        return {"identifier": {"type": "phone_sha256", "value": hash_phone(args.phone)}}
    if args.user_id:
        return {"identifier": {"type": "user_id", "value": args.user_id}}
    return {"identifier": {"type": "loyalty_id", "value": args.loyalty_id}}


def _quote(value: str) -> str:
    from sinks.report.sql import literal

    return literal(value, "String")


def _persons(db: str, request: dict[str, Any]) -> list[str]:
    from cli.commands.query import run_sql

    if "person_id" in request:
        person = _quote(request["person_id"])
    else:
        ident = request["identifier"]
        person = (
            f"(SELECT argMax(person_id, version) FROM {db}.identities "
            f"WHERE identifier_type = {_quote(ident['type'])} "
            f"AND identifier_value = {_quote(ident['value'])} AND NOT is_deleted)"
        )
    sql = (
        f"SELECT arrayJoin(arrayFilter(x -> x != '', arrayConcat([{person}], "
        f"(SELECT groupUniqArray(absorbed_person_id) FROM {db}.identity_merges "
        f"WHERE kind = 'MERGE' AND person_id = {person})))) FORMAT TSV"
    )
    return [line for line in run_sql(sql).decode().splitlines() if line]


def _counts(db: str, persons: list[str]) -> dict[str, int]:
    from cli.commands.query import run_sql

    if not persons:
        return {table: 0 for table, _ in TABLES}
    ids = "[" + ",".join(_quote(p) for p in persons) + "]"
    parts = [
        f"SELECT {_quote(table)}, count() FROM {db}.{table} WHERE has({ids}, {column})"
        for table, column in TABLES
    ]
    body = run_sql(" UNION ALL ".join(parts) + " FORMAT TSV").decode()
    out: dict[str, int] = {}
    for line in body.splitlines():
        table, count = line.split("\t")
        out[table] = int(count)
    return out


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer
    from rich.table import Table

    from pipeline.agents.identity import OWNER_KEY
    from pipeline.core.pii import PIIError
    from pipeline.topics import CONTROL_HEADER, FORGET_CONTROL, Topics

    cfg = settings()
    db = cfg.clickhouse_database
    try:
        request = _request(args)
    except PIIError as exc:
        return fail(f"--email/--phone: {exc}", 2)
    try:
        persons = _persons(db, request)
        before = _counts(db, persons)
    except Exception as exc:  # noqa: BLE001 - engine errors: show them, do not trace back
        return fail(f"cannot read ClickHouse at {cfg.clickhouse_url_redacted}: {exc}")
    producer = Producer({**cfg.kafka_config(), "acks": "all"})
    producer.produce(
        Topics.from_settings(cfg).identity_links.name,
        key=OWNER_KEY,
        value=json.dumps(request).encode(),
        headers=[(CONTROL_HEADER, FORGET_CONTROL)],
    )
    if producer.flush(15):
        return fail(f"the broker at {cfg.kafka_bootstrap} did not take the request")
    if not persons:
        console.print(
            "No person with that identifier in ClickHouse; the request was still sent to "
            "the identity owner, which erases the identifier if it knows it."
        )
        return 0
    console.print(f"Erasure of person {persons[0]} requested; waiting for the worker and sink…")
    deadline = time.monotonic() + args.timeout
    after = before
    while time.monotonic() < deadline:
        after = _counts(db, persons)
        if not any(after.values()):
            break
        time.sleep(0.5)
    table = Table(title=f"forget {persons[0]}")
    table.add_column("table")
    table.add_column("rows before", justify="right")
    table.add_column("rows left", justify="right")
    for name, _column in TABLES:
        table.add_row(name, f"{before[name]:,}", f"{after[name]:,}")
    console.print(table)
    if any(after.values()):
        return fail(
            f"rows are left after {args.timeout:.0f}s: is the worker running (`journeys run`)? "
            "The request stays queued and is carried out when it runs."
        )
    console.print(f"Removed {sum(before.values()):,} rows of {len(persons)} person id(s).")
    return 0
