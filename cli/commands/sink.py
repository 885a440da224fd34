"""``journeys sink``: move the output topics into ClickHouse."""

from __future__ import annotations

import argparse

from cli.commands._common import console, fail, settings, stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sink",
        help="run the ClickHouse sink",
        description="Apply the ClickHouse migrations, then consume the output topics and insert "
        "them in batches, committing offsets only after each insert succeeded. With a chdb:// "
        "URL this process owns the data and serves `journeys query` while it runs.",
    )
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from cli.stack import SinkService
    from pipeline.broker import kafka_answers
    from pipeline.metrics import MetricsError
    from pipeline.topics import ensure_topics
    from sinks.clickhouse import SinkError

    cfg = settings()
    if not kafka_answers(cfg.kafka_bootstrap, client_config=cfg.kafka_config()):
        return fail(f"no Kafka broker answers on {cfg.kafka_bootstrap}")
    ensure_topics(cfg)
    try:
        service = SinkService(cfg)
    except SinkError as exc:
        return fail(str(exc))
    with stop_on_signals() as stop:
        try:
            service.start()
        except MetricsError as exc:
            return fail(str(exc))
        console.print(f"sink running into {cfg.clickhouse_url_redacted}; Ctrl-C stops it")
        if service.metrics is not None:
            console.print(f"metrics on {service.metrics.url}")
        while not stop.wait(1.0):
            if service.error is not None:
                break
    service.stop()
    return 1 if service.error is not None else 0
