"""``journeys migrate``: apply the ClickHouse DDL."""

from __future__ import annotations

import argparse

from cli.commands._common import console, fail, settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply the ClickHouse DDL (idempotent)",
        description="Create database `journeys` and apply the versioned migrations in "
        "sinks/migrations/ that are not yet recorded in journeys.schema_migrations.",
    )
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from sinks.clickhouse import SinkError, connect, migrate
    from sinks.query_server import find_owner

    cfg = settings()
    if find_owner(cfg.clickhouse_url) is not None:
        console.print("the running pipeline owns the ClickHouse data and has migrated it")
        return 0
    try:
        client = connect(cfg.clickhouse_url, cfg.clickhouse_database)
        applied = migrate(client, cfg.clickhouse_database, cfg.clickhouse_cluster)
        client.close()
    except SinkError as exc:
        return fail(str(exc))
    console.print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0
