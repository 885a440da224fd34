"""``journeys worker``: run the stream processors (a Faust worker with the batch engine)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run the stream processors (Faust worker)",
        description="Run one worker (a Faust worker whose batch engine runs the identity, "
        "journey and model-learning stages, and whose Faust agent keeps profiles and audiences): "
        "it consumes journeys.touchpoints and produces the derived topics. Start several "
        "(each with its own JOURNEYS_DATA_DIR) to share the "
        "partitions: they join the consumer group <JOURNEYS_WORKER_ID>-engine. Needs a broker "
        "on JOURNEYS_KAFKA_BOOTSTRAP. With JOURNEYS_METRICS_PORT set it serves Prometheus "
        "metrics on /metrics (docs/metrics.md).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import faust

    from cli.commands._common import fail, settings
    from pipeline.app import create_app
    from pipeline.broker import kafka_answers
    from pipeline.state_guard import StateGuardError, guard
    from pipeline.topics import ensure_topics

    cfg = settings()
    deadline = time.monotonic() + 30  # a broker that is restarting answers in a moment
    while not kafka_answers(cfg.kafka_bootstrap, client_config=cfg.kafka_config()):
        if time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        return fail(
            f"no Kafka broker answers on {cfg.kafka_bootstrap}; start one with `journeys broker` "
            "or use `journeys run`"
        )
    try:
        guard(cfg)  # never mix this state with another broker's topics
    except StateGuardError as exc:
        return fail(str(exc))
    ensure_topics(cfg)
    app = create_app(cfg)
    assert app.engine is not None
    worker = faust.Worker(
        app, app.engine, loglevel="DEBUG" if args.verbose else "WARNING", quiet=True
    )
    worker.execute_from_commandline()
    return 0
