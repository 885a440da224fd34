"""The analysts' read-only profile merges FINAL within partitions only, so a row's versions
must share a partition: every partitioned ReplacingMergeTree is partitioned by a column
that is fixed for its replacing key (``PARTITION_KEYS``), and no migration repartitions.
The data side (no key spans two partitions) is checked in
tests/integration/test_query_speed.py and tests/integration/test_queries.py."""

from __future__ import annotations

import re
from typing import Any

from sinks.clickhouse import ANALYST_SETTINGS, PARTITION_KEYS, LockedClient, load_migrations

_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)\s*\((?P<body>.*?)\)\s*ENGINE\s*=\s*(?P<engine>\w+)"
    r"(?P<rest>.*)",
    re.DOTALL,
)


def _tables() -> dict[str, tuple[str, str | None]]:
    """``table -> (engine, PARTITION BY expression or None)`` over every migration."""
    out: dict[str, tuple[str, str | None]] = {}
    for mig in load_migrations():
        body = "\n".join(
            line for line in mig.sql.splitlines() if not line.lstrip().startswith("--")
        )
        for statement in body.split(";"):
            match = _TABLE.search(statement)
            if match is None:
                continue
            part = re.search(r"PARTITION BY\s+(.+?)\s*\n", match.group("rest") + "\n")
            # A table rebuilt as <name>_vN and exchanged (0005, 0009, 0013) is <name> then.
            name = re.sub(r"_v\d+$", "", match.group(1))
            out[name] = (match.group("engine"), part.group(1) if part else None)
    return out


def test_every_partitioned_replacing_table_is_declared_with_a_fixed_column() -> None:
    tables = _tables()
    replacing = {t: p for t, (engine, p) in tables.items() if engine == "ReplacingMergeTree" and p}
    assert replacing, "the migrations define partitioned ReplacingMergeTrees"
    assert set(replacing) == set(PARTITION_KEYS), "declare each one in PARTITION_KEYS"
    for table, expression in replacing.items():
        column, why = PARTITION_KEYS[table]
        assert expression == f"toYYYYMM({column})", (table, expression)
        assert why


def test_no_migration_changes_a_partition_key_or_an_order_key() -> None:
    for mig in load_migrations():
        assert not re.search(r"MODIFY\s+(ORDER\s+BY|PARTITION)", mig.sql, re.IGNORECASE), mig.name


class _Setting:
    def __init__(self, readonly: bool = False) -> None:
        self.readonly = readonly


class _Client:
    def __init__(self, known: dict[str, Any]) -> None:
        self.server_settings = known


def test_the_profile_sends_only_what_the_server_knows() -> None:
    settings = dict(ANALYST_SETTINGS)
    assert settings["do_not_merge_across_partitions_select_final"] == 1
    assert list(settings)[-1] == "readonly", "readonly is set last"
    new = LockedClient(_Client({k: _Setting() for k in settings}), "chdb://x")
    assert new.analyst_settings() == settings
    # ClickHouse 25.3 has no use_skip_indexes_if_final_exact_mode
    old = LockedClient(
        _Client({k: _Setting() for k in settings if not k.endswith("exact_mode")}), "chdb://x"
    )
    assert "use_skip_indexes_if_final_exact_mode" not in old.analyst_settings()
    assert old.analyst_settings()["readonly"] == 1
    # a readonly profile (the compose file's analyst) may change none: it carries them
    locked = LockedClient(_Client({k: _Setting(readonly=True) for k in settings}), "chdb://x")
    assert locked.analyst_settings() == {}


def test_the_compose_analyst_profile_carries_the_same_settings() -> None:
    """The compose server's analyst is readonly and cannot set them per query."""
    from xml.etree import ElementTree

    from tests.conftest import REPO

    root = ElementTree.parse(REPO / "docker" / "clickhouse" / "users.d" / "journeys.xml")
    profile = root.find("./profiles/analyst")
    assert profile is not None
    values = {child.tag: child.text for child in profile if child.text and child.text.strip()}
    for name, value in ANALYST_SETTINGS.items():
        if name != "use_skip_indexes_if_final_exact_mode":  # unknown to 25.3: left out
            assert values.get(name) == str(value), name
