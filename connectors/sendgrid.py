"""SendGrid Event Webhook events (delivery and engagement events of sent e-mail).

SendGrid POSTs a JSON array of event objects; `journeys replay --source sendgrid` reads
one event object, or one whole webhook array, per line. Field reference:
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event

* ``sg_event_id`` is the source event id (SendGrid's own unique id of the event).
* ``event`` → ``email_<event>``: ``processed``, ``deferred``, ``delivered``, ``bounce``,
  ``dropped``, ``open``, ``click``, ``spamreport``, ``unsubscribe``, ``group_unsubscribe``
  and ``group_resubscribe``. Account events (no recipient) are refused. The channel is
  ``email``.
* ``email`` → ``email_sha256`` (hashed here; the address goes no further). A custom
  argument ``user_id`` / ``anonymous_id`` set at send time (SendGrid copies custom
  arguments to the top level of each event) → ``user_id`` / ``anonymous_id``.
* The campaign: ``utm_*`` parameters and click ids of the clicked ``url``, else
  ``marketing_campaign_name``, else the first ``category``; source ``sendgrid`` and medium
  ``email`` unless the URL says otherwise.
* Free-text fields that may quote the address (``url``, ``reason``, ``response``) are
  kept in ``properties`` only after :func:`pipeline.core.pii.redact`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.base import FieldError, email_identifier, opt_str, parse_time, req_str
from pipeline.core.channels import campaign_from_url
from pipeline.core.model import Campaign, Identifier, Touchpoint, event_id_for
from pipeline.core.pii import redact
from pipeline.core.source_channels import source_channel

#: The events of the Event Webhook that are about one recipient.
EVENTS = (
    "processed",
    "deferred",
    "delivered",
    "bounce",
    "dropped",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
)
#: Webhook array items at most (SendGrid batches well below this).
MAX_EVENTS = 10_000
_TEXT_PROPS = ("url", "reason", "response")
#: Event fields kept as they are in ``properties`` (field -> property name).
_PLAIN_PROPS = (
    ("sg_message_id", "sg_message_id"),
    ("marketing_campaign_id", "marketing_campaign_id"),
    ("asm_group_id", "asm_group_id"),
    ("bounce_classification", "bounce_classification"),
    ("type", "bounce_type"),
    ("status", "status"),
    ("attempt", "attempt"),
    ("sg_content_type", "content_type"),
)


def _scrub(text: str) -> str:
    return redact(text.encode("utf-8")).decode("utf-8", "replace")


class SendGridSource:
    name: str = "sendgrid"
    formats: tuple[str, ...] = ("jsonl",)

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        return [self.map_event(record, received_at)]

    def map_array(self, events: Sequence[Any], received_at: datetime) -> list[Touchpoint]:
        """A whole webhook body (a JSON array of events); the first bad one names itself."""
        if len(events) > MAX_EVENTS:
            raise FieldError("$", f"more than {MAX_EVENTS} events in one array")
        out: list[Touchpoint] = []
        for i, item in enumerate(events):
            if not isinstance(item, Mapping):
                raise FieldError(f"[{i}]", "expected a JSON object")
            try:
                out.append(self.map_event(item, received_at))
            except FieldError as exc:
                raise FieldError(f"[{i}].{exc.field}", str(exc).split(": ", 1)[1]) from exc
        return out

    def map_event(self, event: Mapping[str, Any], received_at: datetime) -> Touchpoint:
        sg_event_id = req_str(event, "sg_event_id", 256)
        kind = req_str(event, "event", 64)
        if kind not in EVENTS:
            raise FieldError(
                "event", f"expected a recipient event ({', '.join(EVENTS)}), got {kind!r:.40}"
            )
        occurred = parse_time(event.get("timestamp"), "timestamp")
        email = email_identifier(event, "email")
        if email is None:
            raise FieldError("email", "required")
        identifiers = [email]
        for field, type_ in (("user_id", "user_id"), ("anonymous_id", "anonymous_id")):
            value = opt_str(event, field, 256)
            if value is not None:
                identifiers.append(Identifier(type_, value))

        url = opt_str(event, "url", 8192)
        categories = _categories(event)
        campaign = _campaign(event, url, categories)
        event_type = f"email_{kind}"
        properties: dict[str, str] = {"event": kind}
        for field, prop in _PLAIN_PROPS:
            value = opt_str(event, field, 512)
            if value is not None:
                properties[prop] = value
        for field in _TEXT_PROPS:
            value = url if field == "url" else opt_str(event, field, 2048)
            if value is not None:
                properties[field] = _scrub(value)
        if categories:
            properties["category"] = ",".join(categories)
        if event.get("sg_machine_open") is True:
            properties["machine_open"] = "true"
        return Touchpoint(
            event_id=event_id_for(self.name, sg_event_id),
            source=self.name,
            source_event_id=sg_event_id,
            occurred_at=occurred,
            received_at=received_at,
            channel=source_channel(self.name, event_type, campaign=campaign),
            event_type=event_type,
            identifiers=tuple(identifiers),
            campaign=campaign,
            properties=properties,
        )


def _categories(event: Mapping[str, Any]) -> list[str]:
    """``category`` is a string or an array of strings."""
    value = event.get("category")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value[:256]]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v[:256] for v in value[:20] if v]
    raise FieldError("category", "expected a string or an array of strings")


def _campaign(event: Mapping[str, Any], url: str | None, categories: list[str]) -> Campaign:
    parsed = campaign_from_url(url) if url else None
    name = (
        (parsed.name if parsed else None)
        or opt_str(event, "marketing_campaign_name", 256)
        or (categories[0] if categories else None)
    )
    return Campaign(
        source=(parsed.source if parsed else None) or "sendgrid",
        medium=(parsed.medium if parsed else None) or "email",
        name=name,
        content=parsed.content if parsed else None,
        term=parsed.term if parsed else None,
        click_id=parsed.click_id if parsed else None,
    )
