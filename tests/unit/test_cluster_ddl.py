"""JOURNEYS_CLICKHOUSE_CLUSTER: the migrations for a replicated, sharded ClickHouse.

No cluster runs here, so the statements are checked as text and parsed by the real
ClickHouse parser (chDB's ``EXPLAIN AST``), which rejects bad syntax without executing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.clickhouse import (
    SHARDED_TABLES,
    LockedClient,
    SinkError,
    connect,
    distributed_statements,
    load_migrations,
    on_cluster,
)

STATEMENTS = [s for m in load_migrations() for s in m.statements("journeys", "prod")]


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedClient]:
    client = connect(f"chdb://{Path(tmp_path_factory.mktemp('ch')) / 'parse'}")
    yield client
    client.close()


def test_every_object_is_created_on_the_cluster_with_replicated_engines() -> None:
    creates = [s for s in STATEMENTS if s.upper().startswith(("CREATE", "ALTER", "DROP", "EXCH"))]
    # A table rebuild copies its rows with INSERT ... SELECT, which has no ON CLUSTER
    # (docs/production: run on one replica of each shard).
    inserts = [s for s in STATEMENTS if s.upper().startswith("INSERT")]
    assert creates and len(creates) + len(inserts) == len(STATEMENTS)
    assert all(" ON CLUSTER prod" in s.split("\n", 1)[0] for s in creates)
    engines = re.findall(r"ENGINE = (\w+)", "\n".join(STATEMENTS))
    # but the lookup a rebuild fills its new columns from (0013), dropped at its end
    engines = [e for e in engines if e != "Join"]
    assert engines and all(e.startswith("Replicated") for e in engines), engines
    # without a cluster nothing changes
    plain = [s for m in load_migrations() for s in m.statements("journeys")]
    assert not any("ON CLUSTER" in s or "Replicated" in s for s in plain)


def test_distributed_tables_shard_by_the_key_rows_replace_each_other_on() -> None:
    ddl = distributed_statements("journeys", "prod")
    assert len(ddl) == len(SHARDED_TABLES)
    for table, key in SHARDED_TABLES.items():
        (mine,) = [s for s in ddl if f"journeys.{table}_all " in s]
        assert f"Distributed(prod, journeys, {table}, cityHash64({key}))" in mine
        create = next(s for s in STATEMENTS if f"journeys.{table} ON CLUSTER" in s)
        order_by = re.search(r"ORDER BY \(?([\w, ]+)\)?", create)
        assert order_by is not None and key in order_by.group(1), (table, key)


def test_the_clickhouse_parser_accepts_every_statement(parser: LockedClient) -> None:
    for statement in [*STATEMENTS, *distributed_statements("journeys", "prod")]:
        parser.raw_query("EXPLAIN AST " + statement)


def test_a_bad_cluster_name_is_refused() -> None:
    with pytest.raises(SinkError, match="cluster name"):
        on_cluster("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "prod; DROP")
