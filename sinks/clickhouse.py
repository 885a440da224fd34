"""ClickHouse: connection by URL, versioned migrations, and the row shape of each topic.

The same code serves ``chdb://PATH`` (the ClickHouse engine in-process, embedded
default) and ``http(s)://user:pass@host:port/db`` (a ClickHouse server).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipeline.settings import redact_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SinkError(RuntimeError):
    """ClickHouse cannot be reached, migrated or written to."""


#: The read-only profile of analysts' reads: ``journeys query``, ``journeys report`` and
#: the query endpoint of the process that owns chDB all send these settings, and only
#: these (docs/performance.md explains each). ``readonly`` comes last so that the others
#: are set before it locks the session.
#:
#: * ``do_not_merge_across_partitions_select_final``: FINAL merges within a partition
#:   only, so a date filter prunes partitions. Exact because every version and duplicate
#:   of a row shares its partition: each partition key is a function of columns that
#:   never change for the row's ORDER BY key (``PARTITION_KEYS``, tested).
#: * ``use_skip_indexes_if_final`` with ``use_skip_indexes_if_final_exact_mode = 0``:
#:   a person lookup under FINAL reads the granules the ``person_id`` bloom filter
#:   picks. A touchpoint or journey forwarded to a merge survivor may then still show
#:   under the absorbed person (docs/analysts.md). ClickHouse 25.3 has no exact mode
#:   (its skip indexes under FINAL are never expanded), so unknown settings are left out.
ANALYST_SETTINGS: dict[str, Any] = {
    "do_not_merge_across_partitions_select_final": 1,
    "use_skip_indexes_if_final": 1,
    "use_skip_indexes_if_final_exact_mode": 0,
    "readonly": 1,
}

#: Partitioned ReplacingMergeTree tables: ``table -> (partition column, why it is fixed
#: for the table's ORDER BY key)``. Every version and duplicate of a row lands in the
#: partition of its first write, which ``do_not_merge_across_partitions_select_final``
#: relies on (tests/unit/test_partition_keys.py checks the DDL against this table, the
#: query tests check the data).
PARTITION_KEYS: dict[str, tuple[str, str]] = {
    "touchpoints": ("occurred_at", "the event's own time; event_id is derived from the event"),
    "identity_merges": ("at", "the time of the change; change_id hashes the change"),
    "journeys": (
        "if(converted = 1, ended_at, started_at)",
        "a converted journey's id derives from its conversion event, whose time is ended_at; "
        "a null path's id derives from its first touch, whose time is started_at (a late "
        "event may revise or retract a null path, never move its first touch: that is "
        "another journey id), migration 0009",
    ),
    "attribution": ("converted_at", "the conversion's event time, part of the key's event"),
    "messaging_events": (
        "occurred_at",
        "touchpoints' rows of e-mail and SMS events, migration 0012",
    ),
}


def _scrub(text: str, url: str) -> str:
    """*text* (a driver's error, say) without the password of *url*, wherever it appears."""
    try:
        password = urlparse(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


class LockedClient:
    """A clickhouse-connect client shared by threads of one process (chDB is one per process)."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LockedClient({redact_url(self.url)!r})"

    def command(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Any:
        with self.lock:
            return self.client.command(sql, parameters=parameters, settings=settings)

    def query_rows(
        self,
        sql: str,
        settings: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> tuple[list[str], list[Sequence[Any]]]:
        with self.lock:
            result = self.client.query(sql, parameters=parameters, settings=settings)
            return list(result.column_names), list(result.result_rows)

    def analyst_settings(self) -> dict[str, Any]:
        """:data:`ANALYST_SETTINGS` without those this server does not know (25.3), nor
        those the user may not change (a readonly profile carries its own: the compose
        file's ``analyst`` profile sets the same values)."""
        known = getattr(self.client, "server_settings", None) or {}
        return {
            k: v
            for k, v in ANALYST_SETTINGS.items()
            if not known or (k in known and not getattr(known[k], "readonly", False))
        }

    def raw_query(self, sql: str, settings: dict[str, Any] | None = None) -> bytes:
        with self.lock:
            data: bytes = self.client.raw_query(sql, settings=settings)
            return data

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        database: str,
        token: str | None = None,
    ) -> None:
        settings = {"insert_deduplication_token": token} if token else None
        with self.lock:
            self.client.insert(
                table, rows, column_names=list(columns), database=database, settings=settings
            )

    def close(self) -> None:
        with self.lock:
            self.client.close()


def connect(url: str, database: str | None = None) -> LockedClient:
    """A client for *url*: ``chdb://PATH`` or ``http(s)://user:pass@host:port/db``."""
    import clickhouse_connect

    try:
        if url.startswith("chdb://"):
            path = Path(url[len("chdb://") :]).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        else:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https"):
                raise SinkError(
                    f"JOURNEYS_CLICKHOUSE_URL {redact_url(url)!r}: use chdb://PATH or http(s)://"
                )
            client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=unquote(parsed.username or "default"),
                password=unquote(parsed.password or ""),
                database=(parsed.path.strip("/") or database or "default"),
                secure=parsed.scheme == "https",
            )
    except SinkError:
        raise
    except Exception as exc:  # noqa: BLE001 - the drivers raise many types
        raise SinkError(
            f"cannot open ClickHouse at {redact_url(url)}: {_scrub(str(exc), url)}"
        ) from exc
    return LockedClient(client, url)


class ChdbReader:
    """A one-shot read-only session on a chDB path, without clickhouse-connect.

    ``journeys query`` opening the data itself pays for every import and query before
    its own: chDB directly saves clickhouse-connect's import and its read of
    ``system.settings`` (about 0.3 s of a one-second budget).
    """

    def __init__(self, url: str) -> None:
        import chdb

        path = Path(url[len("chdb://") :]).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = chdb.connect(str(path))
        except Exception as exc:  # noqa: BLE001 - chDB raises several types
            raise SinkError(f"cannot open ClickHouse at {redact_url(url)}: {exc}") from exc
        self.url = url
        self._set: dict[str, Any] = {}

    def command(self, sql: str) -> None:
        self.conn.query(sql, "TabSeparated")

    def analyst_settings(self) -> dict[str, Any]:
        names = ", ".join(f"'{name}'" for name in ANALYST_SETTINGS)
        body = self.raw_query(f"SELECT name FROM system.settings WHERE name IN ({names})")
        known = set(body.decode().split())
        return {k: v for k, v in ANALYST_SETTINGS.items() if k in known}

    def raw_query(self, sql: str, settings: dict[str, Any] | None = None) -> bytes:
        for name, value in (settings or {}).items():
            if self._set.get(name) != value:  # once: readonly=1 then forbids changes
                self.command(f"SET {name} = {value!r}")
                self._set[name] = value
        data: bytes = self.conn.query(sql, "TabSeparated").bytes()
        return data

    def close(self) -> None:
        self.conn.close()


def connect_reader(url: str, database: str | None = None) -> LockedClient | ChdbReader:
    """A client for a reader that opens the data itself (``journeys query`` with no owner).

    Opening a chDB path starts the engine, and with it the scheduler of refreshable
    materialized views and background merges: the reader stops both at once, for its own
    process, so that only the process that writes (the sink) refreshes
    ``daily_channel_credit`` and merges, and a query competes with neither. A server is
    reached through :func:`connect`, and its views and merges are left alone.
    """
    if not url.startswith("chdb://"):
        return connect(url, database)
    reader = ChdbReader(url)
    for statement in ("SYSTEM STOP VIEWS", "SYSTEM STOP MERGES"):
        try:
            reader.command(statement)
        except Exception as exc:  # noqa: BLE001 - an engine without refreshable views
            log.debug("%s: %s", statement, exc)
    return reader


# ---- migrations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, database: str, cluster: str | None = None) -> list[str]:
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        out = [s.strip().format(db=database) for s in body.split(";") if s.strip()]
        return [on_cluster(s, cluster) for s in out] if cluster else out


#: Data tables and the key that shards them on a cluster: rows that replace each other
#: (same ORDER BY key) must land on the same shard, so the key is the table's own.
SHARDED_TABLES: dict[str, str] = {
    "touchpoints": "event_id",
    "messaging_events": "event_id",
    "identities": "identifier_value",
    "identity_merges": "change_id",
    "journeys": "journey_id",
    "attribution": "conversion_event_id",
    "dead_letters": "dead_letter_id",
    "attribution_models": "model",
    "persons": "person_id",
    "segment_membership": "person_id",
    "audience_changes": "person_id",
}
_CREATE = re.compile(
    r"^(CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW|MATERIALIZED\s+VIEW|DATABASE)\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?"
    r"[\w.]+)",
    re.IGNORECASE,
)
_ALTER = re.compile(
    r"^((?:ALTER|DROP)\s+TABLE\s+(?:IF\s+EXISTS\s+)?[\w.]+|EXCHANGE\s+TABLES\s+[\w.]+\s+AND\s+[\w.]+)",
    re.IGNORECASE,
)
_ENGINE = re.compile(
    r"ENGINE\s*=\s*((?:Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing)?"
    r"MergeTree)\b"
)


def on_cluster(statement: str, cluster: str) -> str:
    """*statement* for every node of *cluster*: ``ON CLUSTER`` after the object's name and
    the replicated variant of a MergeTree engine (its ZooKeeper path and replica name come
    from the server's ``default_replica_path`` / ``default_replica_name``)."""
    if not _IDENT.match(cluster):
        raise SinkError(f"cluster name {cluster!r} is not a plain identifier")
    statement = _CREATE.sub(lambda m: f"{m.group(1)} ON CLUSTER {cluster}", statement, count=1)
    statement = _ALTER.sub(lambda m: f"{m.group(1)} ON CLUSTER {cluster}", statement, count=1)
    return _ENGINE.sub(lambda m: f"ENGINE = Replicated{m.group(1)}", statement)


def distributed_statements(database: str, cluster: str) -> list[str]:
    """``<table>_all`` Distributed tables over the replicated ones, sharded by their key."""
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{table}_all ON CLUSTER {cluster} "
        f"AS {database}.{table} "
        f"ENGINE = Distributed({cluster}, {database}, {table}, cityHash64({key}))"
        for table, key in SHARDED_TABLES.items()
    ]


def load_migrations() -> list[Migration]:
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        out.append(Migration(int(path.name.split("_", 1)[0]), path.name, path.read_text()))
    return out


def migrate(
    client: LockedClient, database: str, cluster: str | None = None, before: int | None = None
) -> list[str]:
    """Apply the migrations not yet recorded in ``{database}.schema_migrations``.

    Idempotent; returns the names applied now (with *before*, only those numbered
    below it: the tests migrate a populated older schema). A recorded migration whose file has
    changed since is an error: write a new migration instead. With *cluster*
    (``JOURNEYS_CLICKHOUSE_CLUSTER``) every statement runs ``ON CLUSTER`` with replicated
    engines, and ``<table>_all`` Distributed tables are created over the data tables.
    """
    if not _IDENT.match(database):
        raise SinkError(f"database name {database!r} is not a plain identifier")
    for statement in (
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY version",
    ):
        client.command(on_cluster(statement, cluster) if cluster else statement)
    _, rows = client.query_rows(f"SELECT version, checksum FROM {database}.schema_migrations FINAL")
    applied = {int(r[0]): str(r[1]) for r in rows}
    done = []
    for mig in load_migrations():
        if before is not None and mig.version >= before:
            continue
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise SinkError(
                    f"migration {mig.name} changed after it was applied "
                    f"(checksum {applied[mig.version]} -> {mig.checksum}); add a new one instead"
                )
            continue
        for statement in mig.statements(database, cluster):
            try:
                client.command(statement)
            except Exception as exc:  # noqa: BLE001 - driver errors vary by transport
                raise SinkError(
                    f"migration {mig.name} failed: {_scrub(str(exc), client.url)}"
                ) from exc
        client.insert(
            "schema_migrations",
            [(mig.version, mig.name, mig.checksum, datetime.now(UTC))],
            ("version", "name", "checksum", "applied_at"),
            database,
        )
        done.append(mig.name)
        log.info("applied migration %s", mig.name)
    if cluster:
        for statement in distributed_statements(database, cluster):
            client.command(statement)
    return done


# ---- rows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any], int, int, datetime], tuple[Any, ...]]


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def touchpoint_row(
    rec: dict[str, Any], partition: int, offset: int, now: datetime
) -> tuple[Any, ...]:
    camp = rec.get("campaign") or {}
    idents = rec.get("identifiers") or []
    return (
        rec["event_id"],
        rec["source"],
        _s(rec.get("source_event_id")),
        _s(rec.get("person_id")),
        rec["channel"],
        rec["event_type"],
        rec["occurred_at"],
        rec["received_at"],
        [i["type"] for i in idents],
        [i["value"] for i in idents],
        _s(camp.get("source")),
        _s(camp.get("medium")),
        _s(camp.get("name")),
        _s(camp.get("content")),
        _s(camp.get("term")),
        _s(camp.get("click_id")),
        _s(rec.get("referrer")),
        _s(rec.get("device_type")),
        _s(rec.get("store_id")),
        _s(rec.get("order_id")),
        float(rec.get("revenue") or 0.0),
        _s(rec.get("currency")),
        rec.get("properties") or {},
        bool(rec.get("is_bot", False)),
        rec.get("consent") or {},
        partition,
        offset,
        now,
    )


TOUCHPOINTS = TableSpec(
    "touchpoints",
    (
        "event_id", "source", "source_event_id", "person_id", "channel", "event_type",
        "occurred_at", "received_at", "identifier_types", "identifier_values",
        "campaign_source", "campaign_medium", "campaign_name", "campaign_content",
        "campaign_term", "click_id", "referrer", "device_type", "store_id", "order_id",
        "revenue", "currency", "properties", "is_bot", "consent", "kafka_partition",
        "kafka_offset", "ingested_at",
    ),
    touchpoint_row,
)  # fmt: skip


def change_id(rec: dict[str, Any]) -> str:
    parts = [
        str(rec["kind"]),
        _s(rec.get("event_id")),
        rec["person_id"],
        _s(rec.get("absorbed_person_id")),
        _s(rec.get("rule")),
        *(f"{i['type']}:{i['value']}" for i in rec.get("identifiers") or []),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def merge_row(rec: dict[str, Any], _p: int, _o: int, now: datetime) -> tuple[Any, ...]:
    idents = rec.get("identifiers") or []
    return (
        change_id(rec),
        str(rec["kind"]),
        rec["at"],
        rec["person_id"],
        _s(rec.get("absorbed_person_id")),
        [i["type"] for i in idents],
        [i["value"] for i in idents],
        _s(rec.get("rule")),
        _s(rec.get("event_id")),
        now,
    )


IDENTITY_MERGES = TableSpec(
    "identity_merges",
    (
        "change_id", "kind", "at", "person_id", "absorbed_person_id", "identifier_types",
        "identifier_values", "rule", "event_id", "ingested_at",
    ),
    merge_row,
)  # fmt: skip

IDENTITIES_COLUMNS = (
    "identifier_type",
    "identifier_value",
    "person_id",
    "rule",
    "updated_at",
    "version",
    "is_deleted",
)


def identity_rows(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Current-mapping rows of ``identities`` implied by one identity change.

    ``identities`` is a ``ReplacingMergeTree(version, is_deleted)``: the change's
    processing-order ``version`` decides which row is current, never its event time
    (``updated_at``), which a re-derivation carries from an older event. A change
    written before versions existed (v1 of the schema) has version 0.
    """
    kind = str(rec["kind"])
    if kind == "REFUSED":
        return []
    deleted = 1 if kind == "FORGET" else 0
    version = int(rec.get("version") or 0)
    return [
        (i["type"], i["value"], rec["person_id"], _s(rec.get("rule")), rec["at"], version, deleted)
        for i in rec.get("identifiers") or []
    ]


def journey_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    path = list(rec["path"])
    hops = sum(1 for a, b in zip(path, path[1:], strict=False) if a != b)
    started, ended = rec["started_at"], rec["ended_at"]
    days = (ended - started).total_seconds() / 86400 if rec["converted"] else 0.0
    return (
        rec["journey_id"],
        rec["person_id"],
        started,
        ended,
        1 if rec["converted"] else 0,
        _s(rec.get("conversion_event_id")),
        float(rec.get("revenue") or 0.0),
        path,
        list(rec.get("touch_event_ids") or []),
        list(rec.get("touch_times") or []),
        len(path),
        hops,
        days,
        int(rec.get("version") or 1),
        1 if rec.get("retracted") else 0,
        _per_touch(rec.get("touch_sources"), len(path)),
        _per_touch(rec.get("touch_devices"), len(path)),
        _s(rec.get("conversion_event_type")),
        _s(rec.get("conversion_device")),
    )


def _per_touch(values: Any, touches: int) -> list[str]:
    """One text per touch; a journey written before the field existed has none: empty."""
    out = [str(v) for v in values or []][:touches]
    return out + [""] * (touches - len(out))


JOURNEYS = TableSpec(
    "journeys",
    (
        "journey_id", "person_id", "started_at", "ended_at", "converted", "conversion_event_id",
        "revenue", "path", "touch_event_ids", "touch_times", "touch_count", "hops",
        "days_to_convert", "version", "is_deleted", "touch_sources", "touch_devices",
        "conversion_event_type", "conversion_device",
    ),
    journey_row,
)  # fmt: skip


def credit_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    return (
        rec["conversion_event_id"],
        rec["journey_id"],
        rec["person_id"],
        rec["model"],
        rec["channel"],
        _s(rec.get("campaign")),
        int(rec.get("touch_position") or 0),
        float(rec["credit"]),
        float(rec["revenue_credit"]),
        _s(rec.get("model_version")),
        rec["converted_at"],
        int(rec.get("version") or 1),
    )


ATTRIBUTION = TableSpec(
    "attribution",
    (
        "conversion_event_id", "journey_id", "person_id", "model", "channel", "campaign",
        "touch_position", "credit", "revenue_credit", "model_version", "converted_at", "version",
    ),
    credit_row,
)  # fmt: skip


MODEL_COLUMNS = (
    "model",
    "version",
    "channel",
    "weight",
    "paths_seen",
    "conversions",
    "computed_at",
)


def model_rows(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One ``attribution_models`` row per channel of a model snapshot."""
    return [
        (
            rec["model"],
            rec["version"],
            channel,
            float(weight),
            int(rec["paths_seen"]),
            float(rec["conversions"]),
            rec["computed_at"],
        )
        for channel, weight in sorted(rec["weights"].items())
    ]


def dead_letter_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    payload = rec.get("payload") or b""
    return (
        rec["dead_letter_id"],
        rec["source"],
        rec["stage"],
        rec["error"],
        payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload),
        _s(rec.get("location")),
        _s(rec.get("topic")),
        rec.get("partition"),
        rec.get("offset"),
        rec["received_at"],
    )


DEAD_LETTERS = TableSpec(
    "dead_letters",
    (
        "dead_letter_id", "source", "stage", "error", "payload", "location", "topic",
        "partition", "offset", "received_at",
    ),
    dead_letter_row,
)  # fmt: skip


# ---- profiles and audiences (0010_profiles.sql) ----------------------------------------

#: The tables ``journeys forget`` also erases a person from.
PROFILE_TABLES = ("persons", "segment_membership", "audience_changes")

_PERSON_COUNTS = (
    "email_opens", "email_clicks", "sms_clicks", "push_opens", "app_screens", "store_visits",
    "qr_scans", "wifi_logins", "orders",
)  # fmt: skip


def person_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    merged = _s(rec.get("merged_into"))
    return (
        rec["person_id"],
        rec["as_of"],
        rec["first_seen"],
        rec["last_seen"],
        dict(rec.get("channels") or {}),
        dict(rec.get("devices") or {}),
        dict(rec.get("platforms") or {}),
        *(int(rec.get(name) or 0) for name in _PERSON_COUNTS),
        float(rec.get("revenue") or 0.0),
        float(rec.get("average_order_value") or 0.0),
        float(rec.get("purchase_frequency") or 0.0),
        float(rec.get("mean_days_between_orders") or 0.0),
        rec.get("last_purchase"),
        int(rec.get("bopis_orders") or 0),
        _s(rec.get("preferred_channel")),
        1 if rec.get("app_user") else 0,
        int(rec.get("cart_items") or 0),
        float(rec.get("cart_value") or 0.0),
        rec.get("cart_since"),
        _s(rec.get("lifecycle_stage")),
        list(rec.get("segments") or []),
        merged,
        int(rec["version"]),
        1 if merged else 0,
    )


PERSONS = TableSpec(
    "persons",
    (
        "person_id", "as_of", "first_seen", "last_seen", "channels", "devices", "platforms",
        *_PERSON_COUNTS, "revenue", "average_order_value", "purchase_frequency",
        "mean_days_between_orders", "last_purchase", "bopis_orders", "preferred_channel",
        "app_user", "cart_items", "cart_value", "cart_since", "lifecycle_stage", "segments",
        "merged_into", "version", "is_deleted",
    ),
    person_row,
)  # fmt: skip


def membership_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    entered = str(rec["change"]) == "ENTERED"
    return (
        rec["person_id"],
        rec["segment"],
        1 if entered else 0,
        rec["entered_at"],
        None if entered else rec["at"],
        _s(rec.get("reason")),
        int(rec["version"]),
    )


SEGMENT_MEMBERSHIP = TableSpec(
    "segment_membership",
    ("person_id", "segment", "is_member", "entered_at", "exited_at", "reason", "version"),
    membership_row,
)


def audience_change_row(rec: dict[str, Any], _p: int, _o: int, _now: datetime) -> tuple[Any, ...]:
    return (
        rec["person_id"],
        rec["segment"],
        str(rec["change"]),
        rec["at"],
        rec["entered_at"],
        _s(rec.get("reason")),
        int(rec["version"]),
    )


AUDIENCE_CHANGES = TableSpec(
    "audience_changes",
    ("person_id", "segment", "change", "at", "entered_at", "reason", "version"),
    audience_change_row,
)
