"""The ClickHouse sink: consume output topics in batches, insert, then commit.

At-least-once with idempotent writes:

* offsets are committed only after every insert of the batch succeeded;
* each insert carries an ``insert_deduplication_token`` made from the topic,
  partition and offset range it covers, so a batch retried after a failure is not
  written twice, and the ReplacingMergeTree keys (event ids, journey ids...) absorb
  what a crash re-delivers in different batch boundaries;
* when ClickHouse is unavailable the sink backs off and retries the same batch,
  keeping its offsets uncommitted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.core.dead_letters import dead_letter_record
from pipeline.metrics import Registry
from pipeline.serde import AvroSerde, SerdeError
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, Topics
from sinks.clickhouse import (
    ATTRIBUTION,
    AUDIENCE_CHANGES,
    DEAD_LETTERS,
    IDENTITIES_COLUMNS,
    IDENTITY_MERGES,
    JOURNEYS,
    MODEL_COLUMNS,
    PERSONS,
    PROFILE_TABLES,
    SEGMENT_MEMBERSHIP,
    SHARDED_TABLES,
    TOUCHPOINTS,
    LockedClient,
    TableSpec,
    identity_rows,
    model_rows,
)

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    batches: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    last_commit: float = 0.0


def sink_metrics(stats: SinkStats) -> Registry:
    """The sink's metrics, read from *stats* at scrape time (``docs/metrics.md``)."""
    registry = Registry()
    registry.counter(
        "journeys_sink_rows_total",
        "Rows inserted into ClickHouse, by table (a retried insert counts once).",
        lambda: dict(stats.rows),
        labels=("table",),
    )
    registry.counter(
        "journeys_sink_batches_total",
        "Batches written to ClickHouse and committed to Kafka.",
        lambda: stats.batches,
    )
    registry.counter(
        "journeys_sink_retries_total",
        "Failed ClickHouse inserts, each retried after a back-off with its offsets kept.",
        lambda: stats.retries,
    )
    return registry


@dataclass
class _Pending:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def add(self, row: tuple[Any, ...], topic: str, partition: int, offset: int) -> None:
        self.rows.append(row)
        span = self.ranges.setdefault((topic, partition), [offset, offset])
        span[0] = min(span[0], offset)
        span[1] = max(span[1], offset)

    def token(self, table: str) -> str:
        spans = ",".join(f"{t}[{p}]{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))
        return hashlib.sha256(f"{table}|{spans}".encode()).hexdigest()


def _is_control(msg: Any) -> bool:
    return any(name == CONTROL_HEADER for name, _v in msg.headers() or ())


class ClickHouseSink:
    """Moves the output topics into ClickHouse tables; :meth:`run` until *stop* is set."""

    def __init__(
        self,
        settings: Settings,
        client: LockedClient,
        serde: AvroSerde,
        group_id: str = "journeys-sink",
        consumer: Any = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.settings = settings
        self.client = client
        self.serde = serde
        self.db = settings.clickhouse_database
        self.cluster = settings.clickhouse_cluster
        topics = Topics.from_settings(settings)
        self.routes: dict[str, str] = {
            topics.person_touchpoints.name: "Touchpoint",
            topics.identity_changes.name: "IdentityChange",
            topics.journeys.name: "Journey",
            topics.attribution.name: "AttributionCredit",
            topics.attribution_models.name: "AttributionModel",
            topics.dead_letters.name: "DeadLetter",
            topics.profiles.name: "PersonProfile",
            topics.audiences.name: "AudienceChange",
        }
        self.consumer = consumer or Consumer(
            {
                **settings.kafka_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": max(500, int(settings.session_timeout_s * 1000) // 6),
                "fetch.wait.max.ms": 50,
                "log.connection.close": False,
            }
        )
        self.stats = SinkStats()
        self.backoff_max_s = 30.0
        self._forgets: list[dict[str, Any]] = []

    def run(
        self, stop: threading.Event, on_batch: Callable[[SinkStats], None] | None = None
    ) -> None:
        self.consumer.subscribe(list(self.routes))
        log.info("sink consuming %s into %s", ", ".join(self.routes), self.db)
        try:
            while not stop.is_set():
                batch = self._collect(stop)
                if batch:
                    self._write(batch, stop)
                    if on_batch is not None:
                        on_batch(self.stats)
        finally:
            self.consumer.close()

    def _collect(self, stop: threading.Event) -> list[Any]:
        batch: list[Any] = []
        deadline = time.monotonic() + self.settings.sink_flush_ms / 1000
        while len(batch) < self.settings.sink_batch_size and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msgs = self.consumer.consume(self.settings.sink_batch_size - len(batch), timeout=left)
            for msg in msgs:
                if msg.error() is not None:
                    log.warning("consume error: %s", msg.error())
                    continue
                batch.append(msg)
        return batch

    def rows_of(self, batch: list[Any]) -> dict[str, _Pending]:
        """Decode a batch and group its rows by table (bad records become dead letters)."""
        now = datetime.now(UTC)
        out: dict[str, _Pending] = defaultdict(_Pending)
        specs: dict[str, TableSpec] = {
            "Touchpoint": TOUCHPOINTS,
            "Journey": JOURNEYS,
            "AttributionCredit": ATTRIBUTION,
            "DeadLetter": DEAD_LETTERS,
            "PersonProfile": PERSONS,
        }
        for msg in batch:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if _is_control(msg) or msg.value() is None:
                continue  # bookkeeping between journey stages, or a compaction tombstone
            schema = self.routes[topic]
            try:
                rec = self.serde.decode(msg.value(), expect=schema)
            except SerdeError as exc:
                log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
                dead = dead_letter_record(
                    "pipeline", "sink", str(exc), msg.value() or b"", None, topic, partition, offset
                )
                out["dead_letters"].add(DEAD_LETTERS.row(dead, 0, 0, now), topic, partition, offset)
                continue
            if schema == "IdentityChange":
                if rec["kind"] == "FORGET":
                    self._forgets.append(rec)
                out["identity_merges"].add(
                    IDENTITY_MERGES.row(rec, partition, offset, now), topic, partition, offset
                )
                for row in identity_rows(rec):
                    out["identities"].add(row, topic, partition, offset)
                continue
            if schema == "AudienceChange":
                for spec in (SEGMENT_MEMBERSHIP, AUDIENCE_CHANGES):
                    row = spec.row(rec, partition, offset, now)
                    out[spec.table].add(row, topic, partition, offset)
                continue
            if schema == "AttributionModel":
                for row in model_rows(rec):
                    out["attribution_models"].add(row, topic, partition, offset)
                continue
            spec = specs[schema]
            out[spec.table].add(spec.row(rec, partition, offset, now), topic, partition, offset)
        return out

    def _columns(self, table: str) -> tuple[str, ...]:
        if table == "identities":
            return IDENTITIES_COLUMNS
        if table == "attribution_models":
            return MODEL_COLUMNS
        return {
            s.table: s.columns
            for s in (TOUCHPOINTS, IDENTITY_MERGES, JOURNEYS, ATTRIBUTION, DEAD_LETTERS)
            + (PERSONS, SEGMENT_MEMBERSHIP, AUDIENCE_CHANGES)
        }[table]

    def _write(self, batch: list[Any], stop: threading.Event) -> None:
        self._forgets = []
        grouped = self.rows_of(batch)
        for table, pending in grouped.items():
            self._insert_with_retry(table, pending, stop)
            if stop.is_set():
                return
        for change in self._forgets:
            self._erase(change)
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic(), msg.partition())
            offsets[key] = max(offsets.get(key, -1), msg.offset())
        from confluent_kafka import TopicPartition

        self.consumer.commit(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
        self.stats.batches += 1
        self.stats.last_commit = time.monotonic()

    def _target(self, table: str) -> str:
        """The table inserts go to: the Distributed ``<table>_all`` on a cluster."""
        return f"{table}_all" if self.cluster and table in SHARDED_TABLES else table

    def _erase(self, change: dict[str, Any]) -> None:
        """A ``FORGET`` change: delete the person's rows everywhere (lightweight deletes).

        The person's absorbed persons (from ``identity_merges``) go too, with the dead
        letters whose redacted payload holds one of its hashed e-mails or phones.
        Deleting is idempotent, so a redelivered change deletes nothing more.
        """
        db, person = self.db, str(change["person_id"])
        if not person:
            return
        _, rows = self.client.query_rows(
            f"SELECT DISTINCT absorbed_person_id FROM {db}.identity_merges "
            "WHERE kind = 'MERGE' AND person_id = {p:String}",
            parameters={"p": person},
        )
        persons = [person, *(str(r[0]) for r in rows if r[0])]
        where = "person_id IN {ps:Array(String)}"
        on = f" ON CLUSTER {self.cluster}" if self.cluster else ""
        for table in (
            "touchpoints",
            "messaging_events",
            "journeys",
            "attribution",
            "identities",
            *PROFILE_TABLES,
        ):
            self.client.command(f"DELETE FROM {db}.{table}{on} WHERE {where}", {"ps": persons})
        self.client.command(
            f"DELETE FROM {db}.identity_merges{on} WHERE {where} "
            "OR absorbed_person_id IN {ps:Array(String)}",
            {"ps": persons},
        )
        for ident in change.get("identifiers") or ():
            if ident["type"] in ("email_sha256", "phone_sha256"):
                self.client.command(
                    f"DELETE FROM {db}.dead_letters{on} WHERE position(payload, {{v:String}}) > 0",
                    {"v": ident["value"]},
                )
        log.info("erased person %s (%d persons with the absorbed ones)", person, len(persons))

    def _insert_with_retry(self, table: str, pending: _Pending, stop: threading.Event) -> None:
        delay = 0.2
        token = pending.token(table)
        while True:
            try:
                self.client.insert(
                    self._target(table), pending.rows, self._columns(table), self.db, token
                )
                self.stats.rows[table] += len(pending.rows)
                return
            except Exception as exc:  # noqa: BLE001 - any driver failure means "retry later"
                self.stats.retries += 1
                log.warning(
                    "insert of %d rows into %s failed (%s); retrying in %.1fs, offsets kept",
                    len(pending.rows), table, exc, delay,
                )  # fmt: skip
                if stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)
