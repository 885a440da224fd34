"""``journeys demo``: run the stack, replay generated data, print what ClickHouse holds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.commands._common import console, fail, settings, stop_on_signals

COUNT_SQL = "SELECT count() FROM {db}.touchpoints FINAL"
DEAD_SQL = "SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'replay'"
CHANNEL_SQL = """
SELECT channel, count() AS touchpoints, uniqExact(person_id) AS persons,
       countIf(event_type = 'order_completed') AS orders, round(sum(revenue), 2) AS revenue
FROM {db}.touchpoints FINAL
GROUP BY channel ORDER BY touchpoints DESC
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate sample data, replay it through the stack, print the result",
        description="Like `journeys run`, but it also generates sample logs, replays them, "
        "waits until ClickHouse holds every event, prints touchpoints per channel and stops.",
    )
    p.add_argument("--people", type=int, default=300, help="customers to simulate (300)")
    p.add_argument("--days", type=int, default=30, help="days of event time (30)")
    p.add_argument("--out", type=Path, default=Path("var/demo"), help="sample folder")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the sink")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from connectors.generate import generate
    from connectors.publisher import Publisher
    from connectors.registry import get_source
    from connectors.replay import replay_files
    from pipeline.broker import BrokerError
    from pipeline.commands.run import embedded_stack
    from pipeline.stack import SinkService
    from pipeline.topics import TopicError
    from sinks.clickhouse import SinkError

    cfg = settings()
    db = cfg.clickhouse_database
    started = time.monotonic()
    gen = generate(args.out, people=args.people, days=args.days)
    console.print(
        f"generated {gen.messages:,} Segment messages for {gen.people} people in {args.out}/"
    )
    try:
        with stop_on_signals() as stop, embedded_stack(cfg, stop) as service:
            assert isinstance(service, SinkService)
            publisher = Publisher(cfg, service.serde)
            stats = replay_files(
                [args.out / "segment.jsonl"],
                get_source("segment"),
                publisher.touchpoint,
                lambda rej: publisher.rejected(rej, "replay"),
            )
            publisher.flush()
            console.print(
                f"replayed {stats.records:,} records: {stats.touchpoints:,} touchpoints, "
                f"{stats.rejected} dead letters; waiting for ClickHouse..."
            )
            deadline = time.monotonic() + args.timeout
            stored = dead = 0
            while time.monotonic() < deadline and not stop.is_set():
                stored = int(service.query(COUNT_SQL.format(db=db))[1][0][0])
                dead = int(service.query(DEAD_SQL.format(db=db))[1][0][0])
                if stored >= stats.touchpoints and dead >= stats.rejected:
                    break
                if service.error is not None:
                    return fail(f"the sink stopped: {service.error}")
                stop.wait(0.5)
            else:
                if not stop.is_set():
                    return fail(
                        f"after {args.timeout:.0f}s ClickHouse holds {stored:,} of "
                        f"{stats.touchpoints:,} touchpoints"
                    )
            columns, rows = service.query(CHANNEL_SQL.format(db=db))
    except (BrokerError, TopicError, SinkError) as exc:
        return fail(str(exc))
    table = Table(title="Touchpoints per channel (ClickHouse journeys.touchpoints)")
    for col in columns:
        table.add_column(col, justify="left" if col == "channel" else "right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    from rich.console import Console

    Console().print(table)
    console.print(
        f"events in = {stats.records:,} = {stored:,} touchpoints + {dead:,} dead letters "
        f"({time.monotonic() - started:.0f}s). Explore: journeys run, then journeys query ..."
    )
    return 0
