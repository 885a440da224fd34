"""Migrations and reads on the real ClickHouse engine (chDB)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sinks.clickhouse import Migration, SinkError, connect, load_migrations, migrate

CONTRACT = {
    "touchpoints": {"event_id", "source", "source_event_id", "person_id", "channel", "event_type",
                    "occurred_at", "revenue"},
    "identities": {"identifier_type", "identifier_value", "person_id"},
    "identity_merges": {"rule", "person_id", "absorbed_person_id"},
    "journeys": {"journey_id", "person_id", "converted", "path"},
    "attribution": {"conversion_event_id", "person_id", "model", "channel", "credit",
                    "revenue_credit"},
    "dead_letters": {"source", "stage", "error", "payload"},
}  # fmt: skip


def test_migrate_is_idempotent_and_creates_the_contract_tables(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        first = migrate(client, "journeys")
        assert first == [m.name for m in load_migrations()]
        assert migrate(client, "journeys") == []
        for table, columns in CONTRACT.items():
            _, rows = client.query_rows(
                f"SELECT name FROM system.columns WHERE database = 'journeys' AND table = '{table}'"
            )
            assert columns <= {r[0] for r in rows}, table
    finally:
        client.close()


def test_a_changed_migration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        migrate(client, "journeys")
        original = load_migrations()
        changed = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in original]
        monkeypatch.setattr("sinks.clickhouse.load_migrations", lambda: changed)
        with pytest.raises(SinkError, match="changed after it was applied"):
            migrate(client, "journeys")
    finally:
        client.close()


def test_bad_urls_are_explained() -> None:
    with pytest.raises(SinkError, match="use chdb://PATH or http"):
        connect("ftp://example")


def journeys_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_query_cli_prints_tables_and_raw_formats_read_only(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "JOURNEYS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}"}
    assert journeys_cli("migrate", env=env).returncode == 0
    table = journeys_cli("query", "SELECT 1 + 1 AS two, 'x' AS s", env=env)
    assert table.returncode == 0, table.stderr
    assert "two" in table.stdout and "2" in table.stdout
    raw = journeys_cli("query", "SELECT number FROM numbers(3) FORMAT CSV", env=env)
    assert raw.stdout == "0\n1\n2\n"
    write = journeys_cli(
        "query", "INSERT INTO journeys.dead_letters (dead_letter_id) VALUES ('x')", env=env
    )
    assert write.returncode == 1 and "readonly" in write.stderr.lower()


def test_broker_cli_refuses_a_taken_port(tmp_path: Path) -> None:
    import os

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "JOURNEYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
        result = journeys_cli("broker", env=env)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "already taken" in result.stderr
