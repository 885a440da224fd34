"""The canonical records of Journeys as plain, typed Python values.

`Touchpoint` mirrors ``schemas/Touchpoint.avsc`` field for field. Connectors build
touchpoints, the pipeline reads them, and the serde turns them into Avro and back
with :meth:`Touchpoint.to_record` / :meth:`Touchpoint.from_record`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

#: Namespace for deterministic event ids: uuid5(EVENT_NAMESPACE, f"{source}:{source_event_id}").
EVENT_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-5b8e-9a57-4a6f0c2d9e31")

#: Identifier types known out of the box, highest stitching priority first.
IDENTIFIER_TYPES: tuple[str, ...] = (
    "user_id",
    "email_sha256",
    "phone_sha256",
    "loyalty_id",
    "device_id",
    "anonymous_id",
)


class ModelError(ValueError):
    """A value cannot be a field of a canonical record."""


def event_id_for(source: str, source_event_id: str) -> str:
    """The deterministic event id of a source event: a UUIDv5 of source and source id.

    Replaying the same source event always gives the same id, which is what makes
    every sink idempotent.
    """
    if not source_event_id:
        raise ModelError("source_event_id: must not be empty")
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{source_event_id}"))


def routing_key(identifiers: Iterable[tuple[str, str]], event_id: str) -> str:
    """``type:value`` of the highest-priority identifier (``event:ID`` when there is none).

    Events that share their strongest identifier land on the same partition.
    """
    by_type: dict[str, str] = {}
    first: tuple[str, str] | None = None
    for type_, value in identifiers:
        by_type.setdefault(type_, value)
        first = first or (type_, value)
    for type_ in IDENTIFIER_TYPES:
        if type_ in by_type:
            return f"{type_}:{by_type[type_]}"
    if first is not None:
        return f"{first[0]}:{first[1]}"
    return f"event:{event_id}"


def utc(value: datetime) -> datetime:
    """Return *value* in UTC; naive datetimes are refused rather than guessed."""
    if value.tzinfo is None:
        raise ModelError(f"naive datetime {value.isoformat()}: a timezone is required")
    return value.astimezone(UTC)


def to_millis(value: datetime) -> int:
    return int(utc(value).timestamp() * 1000)


def from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Identifier:
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Campaign:
    """UTM-style campaign context of a touch (all optional)."""

    source: str | None = None
    medium: str | None = None
    name: str | None = None
    content: str | None = None
    term: str | None = None
    click_id: str | None = None

    def is_empty(self) -> bool:
        return not any(
            (self.source, self.medium, self.name, self.content, self.term, self.click_id)
        )


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """One event of one channel about one customer, in the canonical shape.

    ``occurred_at`` is event time (when it happened at the source); ``received_at``
    is when Journeys first saw it. ``person_id`` is empty until the identity stage
    sets it.
    """

    event_id: str
    source: str
    source_event_id: str | None
    occurred_at: datetime
    received_at: datetime
    channel: str
    event_type: str
    identifiers: tuple[Identifier, ...] = ()
    campaign: Campaign | None = None
    referrer: str | None = None
    device_type: str | None = None
    store_id: str | None = None
    order_id: str | None = None
    revenue: float | None = None
    currency: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    person_id: str | None = None
    #: A known bot or crawler (from the user agent): stored, but no journey's touch.
    is_bot: bool = False
    #: The visitor's consent per category (Segment's ``categoryPreferences``); None
    #: when the source says nothing about consent.
    consent: dict[str, bool] | None = None

    def with_person(self, person_id: str) -> Touchpoint:
        return replace(self, person_id=person_id)

    def identifier(self, type_: str) -> str | None:
        for ident in self.identifiers:
            if ident.type == type_:
                return ident.value
        return None

    def routing_key(self) -> str:
        """The Kafka key of a raw touchpoint: see :func:`routing_key`."""
        return routing_key(((i.type, i.value) for i in self.identifiers), self.event_id)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (``schemas/Touchpoint.avsc``) of this touchpoint."""
        campaign = self.campaign
        return {
            "event_id": self.event_id,
            "source": self.source,
            "source_event_id": self.source_event_id,
            "occurred_at": utc(self.occurred_at),
            "received_at": utc(self.received_at),
            "channel": self.channel,
            "event_type": self.event_type,
            "identifiers": [{"type": i.type, "value": i.value} for i in self.identifiers],
            "campaign": None
            if campaign is None
            else {
                "source": campaign.source,
                "medium": campaign.medium,
                "name": campaign.name,
                "content": campaign.content,
                "term": campaign.term,
                "click_id": campaign.click_id,
            },
            "referrer": self.referrer,
            "device_type": self.device_type,
            "store_id": self.store_id,
            "order_id": self.order_id,
            "revenue": self.revenue,
            "currency": self.currency,
            "properties": dict(self.properties),
            "is_bot": self.is_bot,
            "consent": None if self.consent is None else dict(self.consent),
            "person_id": self.person_id,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Touchpoint:
        """Build a touchpoint from a decoded Avro record."""
        camp = rec.get("campaign")
        return cls(
            event_id=rec["event_id"],
            source=rec["source"],
            source_event_id=rec.get("source_event_id"),
            occurred_at=_as_datetime(rec["occurred_at"]),
            received_at=_as_datetime(rec["received_at"]),
            channel=rec["channel"],
            event_type=rec["event_type"],
            identifiers=tuple(Identifier(i["type"], i["value"]) for i in rec["identifiers"]),
            campaign=None if camp is None else Campaign(**camp),
            referrer=rec.get("referrer"),
            device_type=rec.get("device_type"),
            store_id=rec.get("store_id"),
            order_id=rec.get("order_id"),
            revenue=rec.get("revenue"),
            currency=rec.get("currency"),
            properties=dict(rec.get("properties") or {}),
            is_bot=bool(rec.get("is_bot", False)),
            consent=None if rec.get("consent") is None else dict(rec["consent"]),
            person_id=rec.get("person_id"),
        )


def _as_datetime(value: datetime | int) -> datetime:
    if isinstance(value, datetime):
        return utc(value)
    return from_millis(value)
