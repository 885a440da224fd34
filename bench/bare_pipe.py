"""The bare pipe: consume, decode and insert into ClickHouse with no processing at all.

N touchpoints are produced to ``touchpoints`` on a freshly started broker. Then one
process times confluent-kafka ``consume`` (partitions assigned directly, no group
join), fastavro decoding (:meth:`AvroSerde.decode`), the ``touchpoints`` row shape of
the sink and a chDB insert per batch of ``sink_batch_size`` rows, until every event is
in ClickHouse. That is the limit of this machine for the pipeline's two ends.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    QUIET_CLIENT,
    BenchError,
    bench_settings,
    fragment_main,
    fresh_broker,
    produce,
)
from bench.data import plan
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from sinks.clickhouse import LockedClient


def _one_pass(cfg: Settings, client: LockedClient, serde: AvroSerde, n: int) -> dict[str, Any]:
    """Consume the whole topic from the start, decode, insert; seconds per step."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.topics import Topics
    from sinks.clickhouse import TOUCHPOINTS

    spec = Topics.from_settings(cfg).touchpoints
    db = cfg.clickhouse_database
    client.command(f"TRUNCATE TABLE {db}.touchpoints")
    consumer = Consumer(
        {
            **cfg.kafka_config(),
            **QUIET_CLIENT,
            "group.id": "bench-bare",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "log.connection.close": False,
        }
    )
    spent = {"consume": 0.0, "decode": 0.0, "rows": 0.0, "insert": 0.0}
    done = batches = 0
    started = time.monotonic()
    consumer.assign(
        [TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in range(spec.partitions)]
    )
    while done < n:
        if time.monotonic() - started > 300:
            raise BenchError(f"bare pipe: {done} of {n} events after 300 s")
        a = time.monotonic()
        msgs = [m for m in consumer.consume(cfg.sink_batch_size, timeout=0.25) if not m.error()]
        b = time.monotonic()
        records = [serde.decode(m.value() or b"", expect="Touchpoint") for m in msgs]
        c = time.monotonic()
        now = datetime.now(UTC)
        rows = [
            TOUCHPOINTS.row(rec, m.partition() or 0, m.offset() or 0, now)
            for rec, m in zip(records, msgs, strict=True)
        ]
        d = time.monotonic()
        if rows:
            client.insert("touchpoints", rows, TOUCHPOINTS.columns, db)
            batches += 1
        e = time.monotonic()
        for step, seconds in zip(spent, (b - a, c - b, d - c, e - d), strict=True):
            spent[step] += seconds
        done += len(rows)
    elapsed = time.monotonic() - started
    consumer.close()
    _, got = client.query_rows(f"SELECT count() FROM {db}.touchpoints")
    if int(got[0][0]) != n:
        raise BenchError(f"bare pipe: ClickHouse holds {got[0][0]} rows, expected {n}")
    return {
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed, 1),
        "batches": batches,
        "seconds_by_step": {k: round(v, 3) for k, v in spent.items()},
    }


def measure(events_n: int, warm_up: int, repeat: int) -> dict[str, Any]:
    from pipeline.topics import Topics, ensure_topics
    from sinks.clickhouse import connect, migrate

    events = plan(events_n, warm_up).main
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp, fresh_broker("bare") as boot:
        cfg = bench_settings(boot, Path(tmp), "bare")
        topics = Topics.from_settings(cfg)
        ensure_topics(cfg, topics)
        t0 = time.monotonic()
        produce(boot, topics.touchpoints.name, events)
        produce_s = time.monotonic() - t0
        serde = AvroSerde.from_dir(cfg.schemas_dir)
        client = connect(cfg.clickhouse_url, cfg.clickhouse_database)
        try:
            migrate(client, cfg.clickhouse_database)
            passes = [_one_pass(cfg, client, serde, len(events)) for _ in range(repeat)]
        finally:
            client.close()
    rates = sorted(p["events_per_s"] for p in passes)
    return {
        "events": len(events),
        "repeat": repeat,
        "events_per_s": rates[len(rates) // 2],
        "events_per_s_each": [p["events_per_s"] for p in passes],
        "batch_size": cfg.sink_batch_size,
        "passes": passes,
        "produce_events_per_s": round(len(events) / produce_s, 1),
    }


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--warm-up", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3, help="passes; the median is reported")


def main() -> int:
    return fragment_main(__doc__ or "", _args, lambda a: measure(a.events, a.warm_up, a.repeat))


if __name__ == "__main__":
    raise SystemExit(main())
