"""Live-chat and call-centre interactions, as generic JSON Lines (one interaction a line).

Chat tools (Zendesk, Intercom, LiveChat...) and contact-centre platforms export or post
their conversations in many shapes; Journeys takes one small documented shape (see
``docs/sources.md``) that an export job or a webhook relay writes, and the collector
accepts it at ``/webhooks/interactions``::

    {"interaction_id": "chat-20261001-0042", "type": "chat",
     "started_at": "2026-10-01T10:02:11Z", "ended_at": "2026-10-01T10:09:40Z",
     "direction": "inbound", "tool": "zendesk", "queue": "orders", "agent_id": "a-17",
     "outcome": "resolved",
     "customer": {"email": "...", "phone": "...", "user_id": "...", "loyalty_id": "...",
                  "anonymous_id": "...", "device_id": "..."}}

* ``type`` ``chat`` → event type ``chat``, channel ``chat``; ``call`` → event type
  ``call``, channel ``call_center``.
* ``interaction_id`` is the source event id (a content hash when absent).
* ``started_at`` (or ``timestamp``) is the event time, ISO-8601 or epoch.
* ``customer`` needs at least one identifier; ``email`` and ``phone`` are hashed here.
  Transcripts, notes and free text are never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import (
    FieldError,
    content_id,
    email_identifier,
    opt_float,
    opt_str,
    parse_time,
    phone_identifier,
    req_str,
)
from pipeline.core.model import Identifier, Touchpoint, event_id_for
from pipeline.core.source_channels import source_channel

TYPES = ("chat", "call")
DIRECTIONS = ("inbound", "outbound")
_PLAIN = ("tool", "queue", "agent_id", "outcome", "topic", "language")
_KEYED = ("user_id", "loyalty_id", "anonymous_id", "device_id")


class InteractionsSource:
    name: str = "interactions"
    formats: tuple[str, ...] = ("jsonl",)

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        kind = req_str(record, "type", 16).strip().lower()
        if kind not in TYPES:
            raise FieldError("type", f"expected one of {', '.join(TYPES)}, got {kind!r:.30}")
        started = record.get("started_at") or record.get("timestamp")
        occurred = parse_time(started, "started_at")
        source_event_id = opt_str(record, "interaction_id", 256) or content_id(record)
        direction = opt_str(record, "direction", 16)
        if direction is not None and direction.lower() not in DIRECTIONS:
            raise FieldError("direction", f"expected inbound or outbound, got {direction!r:.30}")

        properties: dict[str, str] = {}
        if direction is not None:
            properties["direction"] = direction.lower()
        for field in _PLAIN:
            value = opt_str(record, field, 256)
            if value is not None:
                properties[field] = value
        duration = opt_float(record, "duration_s")
        ended = record.get("ended_at")
        if duration is None and ended not in (None, ""):
            duration = (parse_time(ended, "ended_at") - occurred).total_seconds()
            if duration < 0:
                raise FieldError("ended_at", "before started_at")
        if duration is not None:
            properties["duration_s"] = f"{duration:g}"
        return [
            Touchpoint(
                event_id=event_id_for(self.name, source_event_id),
                source=self.name,
                source_event_id=source_event_id,
                occurred_at=occurred,
                received_at=received_at,
                channel=source_channel(self.name, kind),
                event_type=kind,
                identifiers=_identifiers(record),
                properties=properties,
            )
        ]


def _identifiers(record: Mapping[str, Any]) -> tuple[Identifier, ...]:
    customer = record.get("customer")
    if not isinstance(customer, Mapping):
        raise FieldError("customer", "expected a JSON object with the customer's identifiers")
    out: list[Identifier] = []
    for field in _KEYED:
        value = opt_str(record, f"customer.{field}", 256)
        if value is not None:
            out.append(Identifier(field, value.strip()))
    for found in (
        email_identifier(record, "customer.email"),
        phone_identifier(record, "customer.phone"),
    ):
        if found is not None:
            out.append(found)
    if not out:
        raise FieldError("customer", "at least one identifier is required")
    return tuple(dict.fromkeys(out))
