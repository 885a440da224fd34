"""Prometheus metrics without a dependency: a registry read at scrape time, and its server.

The services keep their own plain counters (:class:`~pipeline.agents.engine.EngineCounters`,
:class:`~sinks.runner.SinkStats`, :class:`~connectors.collector.CollectorStats`...),
updated on their hot paths without a lock. A :class:`Registry` holds, for each metric
family, a callable that reads them; it is called only when Prometheus scrapes
``GET /metrics``, from the server's thread. So a scrape costs the hot path nothing,
and its values are as fresh as the counters. The callables read plain ints and copy
dicts with ``dict(...)``, which CPython does without releasing the GIL: a scrape never
sees a dict change size under it.

The output is the Prometheus text exposition format 0.0.4: ``# HELP`` and ``# TYPE``
once per family, then its samples, with label values escaped (``\\``, ``"`` and
newlines). Counter names end in ``_total``. ``docs/metrics.md`` lists every metric.

A metric's labels name things the pipeline itself chose (topics, tables, routes,
sources, status codes), never a value taken from an event: no identifier, e-mail or
phone number reaches a label, and the number of series stays bounded.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

log = logging.getLogger(__name__)

#: The ``Content-Type`` of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Kind = Literal["counter", "gauge"]
#: What a family's callable returns: one number when the family has no labels, else a
#: mapping from label values (a tuple in the order of the labels, or a plain value for
#: a family with one label) to numbers.
Reading = float | Mapping[Any, float]


class MetricsError(RuntimeError):
    """A metric is declared wrongly, or the metrics server cannot listen."""


def escape_label_value(value: str) -> str:
    """*value* as it goes between the double quotes of a label."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """*text* as it goes after ``# HELP name``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a decimal point, ``+Inf``, ``-Inf``, ``NaN``."""
    if isinstance(value, bool | int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class _Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    read: Callable[[], Reading]

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        reading = self.read()
        if not self.labels:
            if isinstance(reading, Mapping):
                raise MetricsError(f"{self.name}: has no labels but read a mapping")
            return [((), reading)]
        if not isinstance(reading, Mapping):
            raise MetricsError(f"{self.name}: has labels {self.labels} but read a number")
        out = []
        for key, value in reading.items():
            values = key if isinstance(key, tuple) else (key,)
            if len(values) != len(self.labels):
                raise MetricsError(f"{self.name}: label values {values!r} for {self.labels}")
            out.append((tuple(str(v) for v in values), value))
        out.sort(key=lambda sample: sample[0])
        return out

    def render(self, lines: list[str]) -> None:
        samples = self.samples()  # first: a failing read leaves no half family
        lines.append(f"# HELP {self.name} {escape_help(self.help)}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        for values, value in samples:
            if values:
                pairs = ",".join(
                    f'{label}="{escape_label_value(v)}"'
                    for label, v in zip(self.labels, values, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {format_value(value)}")
            else:
                lines.append(f"{self.name} {format_value(value)}")


class Registry:
    """Metric families, each read by its callable when :meth:`render` runs.

    ``registry.counter("journeys_sink_batches_total", "Batches committed.",
    lambda: stats.batches)`` declares a family without labels; with
    ``labels=("table",)``, the callable returns ``{"touchpoints": 120, ...}``.
    """

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def counter(
        self, name: str, help: str, read: Callable[[], Reading], labels: tuple[str, ...] = ()
    ) -> None:
        """A value that only goes up (it starts again at 0 when the process restarts)."""
        if not name.endswith("_total"):
            raise MetricsError(f"counter {name}: a counter's name ends with _total")
        self._add(_Family(name, "counter", help, labels, read))

    def gauge(
        self, name: str, help: str, read: Callable[[], Reading], labels: tuple[str, ...] = ()
    ) -> None:
        """A value that goes up and down."""
        self._add(_Family(name, "gauge", help, labels, read))

    def _add(self, family: _Family) -> None:
        if not _NAME.fullmatch(family.name):
            raise MetricsError(f"{family.name!r} is not a metric name")
        for label in family.labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise MetricsError(f"{family.name}: {label!r} is not a label name")
        if len(set(family.labels)) != len(family.labels):
            raise MetricsError(f"{family.name}: a label appears twice")
        if family.name in self._families:
            raise MetricsError(f"{family.name} is declared twice")
        self._families[family.name] = family

    @property
    def names(self) -> list[str]:
        return list(self._families)

    def render(self) -> str:
        """Every family in the text format. A family whose callable fails is left out
        (and logged), so that one broken reading does not hide the others."""
        lines: list[str] = []
        for family in self._families.values():
            try:
                family.render(lines)
            except Exception as exc:  # noqa: BLE001 - any failing reading: skip that family
                log.warning("metric %s left out of the scrape: %s", family.name, exc)
        return "\n".join(lines) + "\n" if lines else ""


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    if ":" not in host:
        return ThreadingHTTPServer

    class IPv6Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return IPv6Server


class MetricsServer:
    """Serves ``GET /metrics`` from *registry* on *host*:*port* (0: a free port), in a
    daemon thread; every other path is a 404. Nothing listens before :meth:`start`."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?", 1)[0] != METRICS_PATH:
                    self.send_error(404, f"only {METRICS_PATH} is served here")
                    return
                body = registry.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug(format, *args)

        return Handler

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    def start(self) -> MetricsServer:
        """Listen and serve; :class:`MetricsError` (naming the setting) when it cannot."""
        if self._httpd is not None:
            return self
        try:
            httpd = _server_class(self.host)((self.host, self.port), self._handler())
        except (OSError, OverflowError) as exc:
            raise MetricsError(
                f"cannot serve metrics on {self.host}:{self.port} "
                f"(JOURNEYS_METRICS_HOST / JOURNEYS_METRICS_PORT): {exc}"
            ) from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.1,), name="metrics-server", daemon=True
        )
        self._thread.start()
        log.info("Prometheus metrics on %s", self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
