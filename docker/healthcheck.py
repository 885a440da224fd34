"""Healthchecks of the Journeys containers (docker-compose.yml runs them in the image).

    python docker/healthcheck.py http URL       the URL answers 2xx (the collector's /healthz)
    python docker/healthcheck.py group [GROUP]  this container is a member of the Kafka
                                                consumer group (default: the workers'
                                                group, JOURNEYS_WORKER_ID + "-engine")
    python docker/healthcheck.py clickhouse     JOURNEYS_CLICKHOUSE_URL answers SELECT 1

Exit status 0 is healthy, 1 unhealthy; one line on stdout says why (Docker keeps it in
``docker inspect``). Settings come from the same JOURNEYS_* variables as the service, and
the Kafka security settings apply here too. Nothing secret is printed.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import urllib.request
from typing import Any

USAGE = "usage: healthcheck.py http URL | group [GROUP] | clickhouse"


def check_http(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return f"{url} answered {response.status}"


def own_addresses() -> set[str]:
    """The addresses the broker sees this container connect from."""
    hostname = socket.gethostname()
    addresses = {hostname}
    with contextlib.suppress(OSError):
        addresses.update(socket.gethostbyname_ex(hostname)[2])
    return addresses


def default_group(settings: Any) -> str:
    """The group a worker container must be in: the workers' engine group (the worker's
    Faust app joins none)."""
    from pipeline.agents.engine import engine_group

    return engine_group(settings)


def check_group(group: str | None) -> str:
    from confluent_kafka.admin import AdminClient

    from pipeline.settings import Settings

    settings = Settings()
    group = group or default_group(settings)
    admin = AdminClient({**settings.kafka_config(), "socket.timeout.ms": 5000})
    futures = admin.describe_consumer_groups([group], request_timeout=8)
    description = futures[group].result(timeout=9)
    hosts = {str(member.host).lstrip("/") for member in description.members}
    mine = own_addresses()
    if hosts & mine:
        return f"member of consumer group {group} ({len(hosts)} member hosts)"
    raise RuntimeError(
        f"not a member of consumer group {group} (state {description.state}, "
        f"{len(description.members)} members)"
    )


def check_clickhouse() -> str:
    from pipeline.settings import Settings
    from sinks.clickhouse import connect

    settings = Settings()
    client = connect(settings.clickhouse_url, settings.clickhouse_database)
    try:
        _, rows = client.query_rows("SELECT 1")
    finally:
        client.close()
    return f"{settings.clickhouse_url_redacted} answered {rows[0][0]}"


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE)
        return 2
    mode, args = argv[0], argv[1:]
    try:
        if mode == "http" and len(args) == 1:
            message = check_http(args[0])
        elif mode == "group" and len(args) <= 1:
            message = check_group(args[0] if args else None)
        elif mode == "clickhouse" and not args:
            message = check_clickhouse()
        else:
            print(USAGE)
            return 2
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy, said in one line
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    print(f"healthy: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
