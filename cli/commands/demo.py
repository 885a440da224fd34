"""``journeys demo``: run the stack, replay generated data, print what ClickHouse holds."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from cli.commands._common import console, fail, settings, stop_on_signals

COUNT_SQL = "SELECT count() FROM {db}.touchpoints FINAL"
DEAD_SQL = "SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'replay'"
CREDIT_SQL = """
SELECT channel,
       round(sumIf(credit, model = 'first_touch'), 1) AS first,
       round(sumIf(credit, model = 'last_touch'), 1) AS last,
       round(sumIf(credit, model = 'linear'), 1) AS linear,
       round(sumIf(credit, model = 'time_decay'), 1) AS decay,
       round(sumIf(credit, model = 'position_based'), 1) AS position,
       round(sumIf(credit, model = 'markov'), 1) AS markov,
       round(sumIf(credit, model = 'shapley'), 1) AS shapley
FROM {db}.attribution_current
GROUP BY channel ORDER BY linear DESC
"""
SEGMENTS_SQL = """
SELECT segment, countIf(is_member = 1) AS members, count() AS ever
FROM {db}.segment_membership FINAL
GROUP BY segment ORDER BY members DESC, segment
"""
CHANNEL_SQL = """
SELECT channel, count() AS touchpoints, uniqExact(person_id) AS persons,
       countIf(event_type IN ('order_completed', 'purchase', 'store_purchase',
                              'marketplace_purchase')) AS orders,
       round(sum(revenue), 2) AS revenue
FROM {db}.touchpoints FINAL
GROUP BY channel ORDER BY touchpoints DESC
"""


def _settled(count: Callable[[], int], quiet_s: float = 3.0) -> int:
    """Wait until *count* is above 0 and unchanged for *quiet_s* (30 s at most)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + 30
    while time.monotonic() < deadline:
        now = count()
        if now != last or now == 0:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return last


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate sample data, replay it through the stack, print the result",
        description="Like `journeys run`, but it also generates sample logs of every source, "
        "replays them merged in event time, waits until ClickHouse holds every event, prints "
        "touchpoints per channel and the credit of every model, writes the HTML report and "
        "stops. Its state (broker topics, ClickHouse, worker tables) lives under --out, apart "
        "from `journeys run`'s, and starts empty each time.",
    )
    p.add_argument("--people", type=int, default=300, help="customers to simulate (300)")
    p.add_argument("--days", type=int, default=30, help="days of event time (30)")
    p.add_argument("--out", type=Path, default=Path("var/demo"), help="sample folder")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the sink")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cli.commands.run import embedded_stack
    from cli.stack import SinkService
    from connectors.generate import generate
    from connectors.publisher import Publisher
    from connectors.registry import SOURCES, get_source
    from connectors.replay import replay_files, source_of_file
    from pipeline.broker import BrokerError
    from pipeline.metrics import MetricsError
    from pipeline.topics import TopicError
    from sinks.clickhouse import SinkError
    from sinks.report.data import ReportError, fetch_report

    out_dir: Path = args.out
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    for state in (out_dir / "clickhouse", out_dir / "worker", out_dir / "broker"):
        if state.exists():
            shutil.rmtree(state)  # the demo's own state: every demo starts empty
    cfg = settings().model_copy(
        update={
            "clickhouse_url": f"chdb://{out_dir / 'clickhouse'}",
            "data_dir": out_dir / "worker",
            "broker_dir": out_dir / "broker",
            "topic_prefix": f"demo{stamp}",
            "worker_id": f"journeys-demo-{stamp}",
        }
    )
    db = cfg.clickhouse_database
    started = time.monotonic()
    gen = generate(out_dir, people=args.people, days=args.days)
    files = [out_dir / name for name in gen.files]
    console.print(
        f"generated {sum(gen.files.values()):,} records of {len(files)} sources for "
        f"{gen.people} people in {out_dir}/"
    )
    try:
        with stop_on_signals() as stop, embedded_stack(cfg, stop) as service:
            assert isinstance(service, SinkService)
            publisher = Publisher(cfg, service.serde)
            stats = replay_files(
                files,
                [get_source(source_of_file(path, SOURCES)) for path in files],
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
            inserted = service.sink.stats.rows  # rows this run wrote (the path may hold older ones)
            while time.monotonic() < deadline and not stop.is_set():
                stored, dead = inserted["touchpoints"], inserted["dead_letters"]
                if stored >= stats.touchpoints and dead >= stats.rejected:
                    stored = int(service.query(COUNT_SQL.format(db=db))[1][0][0])
                    dead = int(service.query(DEAD_SQL.format(db=db))[1][0][0])
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
            credit = _settled(lambda: service.sink.stats.rows["attribution"])
            credit_columns, credit_rows = service.query(CREDIT_SQL.format(db=db))
            segment_rows: list = []
            if cfg.audiences and _settled(lambda: service.sink.stats.rows["segment_membership"]):
                segment_rows = service.query(SEGMENTS_SQL.format(db=db))[1]
            # Our own SQL on the sink's client: no read-only setting here, since chDB keeps
            # settings per client and the sink's inserts must stay possible.
            report = fetch_report(service.client.raw_query, db)
    except (BrokerError, TopicError, SinkError, ReportError, MetricsError) as exc:
        return fail(str(exc))
    table = Table(title="Touchpoints per channel (ClickHouse journeys.touchpoints)")
    for col in columns:
        table.add_column(col, justify="left" if col == "channel" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    from rich.console import Console

    out = Console()
    out.print(table)
    if credit:
        credits = Table(title="Conversions credited per channel, by attribution model")
        for col in credit_columns:
            credits.add_column(col, justify="left" if col == "channel" else "right", no_wrap=True)
        for row in credit_rows:
            credits.add_row(*(str(v) for v in row))
        segments = Table(title="Segments: members now (ever)")
        segments.add_column("segment", no_wrap=True)
        segments.add_column("members", justify="right")
        for name, members, ever in segment_rows:
            segments.add_row(str(name), f"{members:,} ({ever:,})")
        from rich.columns import Columns

        out.print(Columns([credits, segments]) if segment_rows else credits)
    console.print(
        f"{stats.records:,} records in: {stored:,} touchpoints + {dead:,} dead letters "
        f"({time.monotonic() - started:.0f}s)."
    )
    from cli.commands.report import write_html
    from cli.commands.status import disk_usage, human

    sizes = {name: disk_usage(out_dir / name) for name in ("broker", "worker", "clickhouse")}
    console.print(
        f"disk used in {out_dir}/: {human(disk_usage(out_dir))} ("
        + ", ".join(f"{name} {human(size)}" for name, size in sizes.items())
        + ")",
        highlight=False,
    )
    path = write_html(report, out_dir / "report.html")
    console.print(f"report: {path.resolve()}", highlight=False)
    console.print(
        f"Explore the demo's data: JOURNEYS_CLICKHOUSE_URL=chdb://{out_dir / 'clickhouse'} "
        "journeys query 'SELECT ...'",
        highlight=False,
    )
    return 0
