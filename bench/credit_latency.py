"""Conversion to credit: the wall time from the collector accepting a conversion to its
credit rows being in ClickHouse (``conversion_to_credit_p99_s``).

A ``journeys collect`` process takes Segment messages over HTTP (write key ``dev``):
for each customer a page view, then an ``Order Completed`` a second later (event
time now, so nothing waits for lateness). The clock starts when the collector answers
the order with 200 (it answers once Kafka has acknowledged the message) and stops when
the sink's insert of the order's credit for all eight models has returned
(:class:`CreditClock`, fed by the sink's recording client). :mod:`bench.pipeline_e2e`
runs it beside its steady quarter-of-capacity load and alone, as a trickle of 1 event/s.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.core.attribution import MODELS
from pipeline.core.model import event_id_for

_AUTH = "Basic " + base64.b64encode(b"dev:").decode()


class CreditClock:
    """When each conversion's credit became visible: the return of the sink's insert
    that completed its rows for every model (see ``RecordingClient.insert``)."""

    def __init__(self) -> None:
        self.visible: dict[str, float] = {}
        self._models: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def inserted(self, rows: Sequence[Sequence[Any]], columns: Sequence[str], at: float) -> None:
        conv, model = columns.index("conversion_event_id"), columns.index("model")
        with self._lock:
            for row in rows:
                cid = str(row[conv])
                if cid in self.visible:
                    continue
                seen = self._models.setdefault(cid, set())
                seen.add(str(row[model]))
                if len(seen) == len(MODELS):
                    self.visible[cid] = at
                    del self._models[cid]


class Collector:
    """A keep-alive HTTP client of the collector on *port*."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, path: str, message: dict[str, Any]) -> float:
        """POST *message*; the monotonic time its 200 answer arrived."""
        self.conn.request(
            "POST",
            path,
            body=json.dumps(message).encode(),
            headers={"Content-Type": "application/json", "Authorization": _AUTH},
        )
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"collector answered {resp.status} to {path}: {body[:200]!r}")
        return time.monotonic()

    def close(self) -> None:
        self.conn.close()


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def send_conversions(
    port: int, events_per_s: float, seconds: float, stop: Callable[[], bool] = lambda: False
) -> dict[str, float]:
    """*events_per_s* messages for *seconds*, a page view then an order per customer;
    the acceptance time of each order by its event id."""
    collector = Collector(port)
    accepted: dict[str, float] = {}
    start = time.monotonic()
    customer = ""
    try:
        for i in range(max(2, int(events_per_s * seconds))):
            ahead = start + i / events_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if stop():
                break
            now = datetime.now(UTC)
            message_id = str(uuid.uuid4())
            if i % 2 == 0:
                customer = f"bench-credit-{uuid.uuid4().hex[:12]}"
                url = "https://shop.example.com/?utm_source=google&utm_medium=cpc"
                page = {
                    "type": "page",
                    "messageId": message_id,
                    "anonymousId": customer,
                    "properties": {"url": url, "path": "/"},
                    "context": {"page": {"url": url, "path": "/"}},
                    "timestamp": _stamp(now - timedelta(seconds=1)),
                }
                collector.send("/v1/page", page)
                continue
            order = {
                "type": "track",
                "event": "Order Completed",
                "messageId": message_id,
                "anonymousId": customer,
                "properties": {"order_id": message_id, "revenue": 50.0, "currency": "USD"},
                "timestamp": _stamp(now),
            }
            accepted[event_id_for("segment", message_id)] = collector.send("/v1/track", order)
    finally:
        collector.close()
    return accepted
