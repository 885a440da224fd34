"""``journeys run``: the whole embedded stack in the foreground."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cli.commands._common import console, fail, settings, stop_on_signals
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run broker, collector, worker and sink in the foreground (Ctrl-C stops all)",
        description="Start the embedded broker on JOURNEYS_KAFKA_BOOTSTRAP when nothing answers "
        "there (persistent: its data lives in JOURNEYS_BROKER_DIR, var/broker, and survives "
        "restarts), create the topics, migrate ClickHouse, and run the HTTP collector "
        "(127.0.0.1:8088), the worker and the sink until Ctrl-C. A restart resumes where it "
        "stopped; `journeys reset` starts over. Meanwhile, in another terminal: `journeys "
        "replay ...`, `journeys query ...`, or point a Segment SDK at the collector with "
        "write key `dev`.",
    )
    p.set_defaults(func=run)


@contextmanager
def embedded_stack(
    cfg: Settings, stop: threading.Event, with_collector: bool = False
) -> Iterator[object]:
    """Broker (if needed), topics, ClickHouse sink in this process, worker (and the HTTP
    collector) as children. Raises :class:`~pipeline.state_guard.StateGuardError` before
    anything runs if the worker state was built with another broker."""
    from cli.stack import SinkService, child_env, settings_for, spawn, stop_process
    from pipeline.broker import ensure_broker
    from pipeline.state_guard import guard
    from pipeline.topics import ensure_topics

    with ensure_broker(
        cfg.kafka_bootstrap,
        log_path=cfg.log_dir / "broker.log",
        storage=cfg.broker_storage,
        data_dir=cfg.broker_dir,
    ) as broker:
        # The worker restores its state from its local store and the changelogs; the
        # state must belong to this broker (no state is ever deleted here).
        guard(cfg)
        ensure_topics(cfg)
        service = SinkService(cfg).start()
        service.broker = broker
        # The children run with these settings, not only the environment's; each process
        # serves its metrics on its own port (cli.stack.METRICS_PORT_OFFSETS).
        children = [spawn(["worker"], env=child_env(settings_for(cfg, "worker")))]
        if with_collector:
            children.append(spawn(["collect"], env=child_env(settings_for(cfg, "collector"))))
        service.children = children
        try:
            yield service
        finally:
            stop.set()
            for child in reversed(children):
                stop_process(child)
            service.stop()
        worker = children[0]
        if worker.returncode not in (0, -15, None):
            console.print(f"[yellow]worker exited with code {worker.returncode}[/]")


def run(_args: argparse.Namespace) -> int:
    from cli.commands.status import folders_table
    from cli.stack import SinkService
    from pipeline.broker import BrokerError
    from pipeline.metrics import MetricsError
    from pipeline.state_guard import StateGuardError
    from pipeline.topics import TopicError
    from sinks.clickhouse import SinkError

    cfg = settings()
    try:
        with stop_on_signals() as stop, embedded_stack(cfg, stop, with_collector=True) as service:
            assert isinstance(service, SinkService)
            storage = (
                "external"
                if service.broker is None
                else ("persistent" if cfg.broker_storage == "s3" else "in memory")
            )
            console.print(
                f"[bold green]Journeys is running[/]: Kafka {cfg.kafka_bootstrap} ({storage}), "
                f"ClickHouse {cfg.clickhouse_url_redacted}. Ctrl-C stops everything; a "
                "restart resumes where it stopped (`journeys reset` starts over).\n"
                "  collect: http://127.0.0.1:8088/v1/track (write key dev), /webhooks/...\n"
                "  replay:  make replay-sample (or journeys replay FILE --source NAME)\n"
                '  query:   journeys query "SELECT channel, count() FROM journeys.touchpoints '
                'FINAL GROUP BY channel"'
            )
            if service.metrics is not None:
                port = service.metrics.port
                others = f", worker :{port + 1}, collector :{port + 2}" if cfg.metrics_port else ""
                console.print(f"  metrics: {service.metrics.url} (sink){others}")
            console.print(folders_table(cfg))
            while not stop.wait(1.0):
                if service.error is not None:
                    return fail(f"the sink stopped: {service.error}")
                if service.broker is not None:
                    service.broker.check()  # restarts a broker that died
                for name, child in zip(("worker", "collect"), service.children, strict=False):
                    if child.poll() is not None and not stop.is_set():
                        return fail(
                            f"`journeys {name}` (pid {child.pid}) exited "
                            f"with code {child.returncode}; see its messages above. Start "
                            "`journeys run` again: acknowledged events are kept."
                        )
    except (BrokerError, TopicError, SinkError, MetricsError, StateGuardError) as exc:
        return fail(str(exc))
    console.print("stopped")
    return 0
