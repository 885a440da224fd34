"""Twilio Programmable Messaging webhooks: status callbacks, inbound messages, link clicks.

Twilio POSTs form parameters (``application/x-www-form-urlencoded``); `journeys replay
--source twilio` reads one request per line, its parameters as a JSON object. References:
https://www.twilio.com/docs/messaging/guides/track-outbound-message-status and
https://www.twilio.com/docs/messaging/guides/webhook-request.

* A status callback (``MessageSid``, ``MessageStatus``) → ``sms_<status>``: ``sms_sent``,
  ``sms_delivered``, ``sms_undelivered``, ``sms_failed``, ``sms_read``... One message has
  several statuses, so the source event id is ``MessageSid:MessageStatus``.
* An inbound message (``SmsStatus=received``) → ``sms_inbound``, source id ``MessageSid``.
* A Link Shortening click (the Event Streams CloudEvent
  ``com.twilio.daptbt.link-shortening.link-clicked``, JSON) → ``sms_click``, source id the
  CloudEvent ``id``, campaign from the UTM parameters of the original ``link``.
* The customer is ``To`` of an outbound message and ``From`` of an inbound one; a
  ``whatsapp:`` (or other channel) prefix is dropped, the number becomes
  ``phone_sha256`` (E.164). The body of a message is never kept.
* Status callbacks carry no event time: ``occurred_at`` is the optional ``Timestamp``
  parameter (added by whoever logged the request, for replays), else the time Journeys
  received it. The channel is ``sms``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import FieldError, get_path, opt_str, parse_time, req_str, snake
from pipeline.core.channels import campaign_from_url
from pipeline.core.model import Campaign, Identifier, Touchpoint, event_id_for
from pipeline.core.pii import PIIError, hash_phone, redact
from pipeline.core.source_channels import source_channel

LINK_CLICKED = "com.twilio.daptbt.link-shortening.link-clicked"
INBOUND_STATUSES = ("received", "receiving")
#: Address prefixes of channels whose addresses are phone numbers.
PHONE_PREFIXES = frozenset({"whatsapp", "sms", "mms", "rcs"})
_STATUS_RE = re.compile(r"^[a-z][a-z_]{0,39}$")
_PREFIX_RE = re.compile(r"^([a-z][a-z0-9_-]{1,20}):(.*)$")
#: Parameters kept in ``properties`` (parameter -> property name); never the Body.
_PROPS = (
    ("AccountSid", "account_sid"),
    ("MessagingServiceSid", "messaging_service_sid"),
    ("ErrorCode", "error_code"),
    ("NumSegments", "num_segments"),
    ("NumMedia", "num_media"),
    ("RawDlrDoneDate", "dlr_done_date"),
    ("ChannelPrefix", "channel_prefix"),
)


class TwilioSource:
    name: str = "twilio"
    formats: tuple[str, ...] = ("jsonl",)

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        if "specversion" in record:
            return [self.map_cloud_event(record, received_at)]
        return [self.map_params(record, received_at)]

    def map_params(self, params: Mapping[str, Any], received_at: datetime) -> Touchpoint:
        """A status callback or an inbound-message webhook (its form parameters)."""
        sid = opt_str(params, "MessageSid", 64) or opt_str(params, "SmsSid", 64)
        if sid is None:
            raise FieldError("MessageSid", "required")
        raw_status = opt_str(params, "MessageStatus", 64) or opt_str(params, "SmsStatus", 64)
        if raw_status is None:
            raise FieldError("MessageStatus", "required")
        status = snake(raw_status)
        if not _STATUS_RE.match(status):
            raise FieldError("MessageStatus", f"not a message status: {raw_status!r:.40}")
        stamp = params.get("Timestamp")
        occurred = received_at if stamp in (None, "") else parse_time(stamp, "Timestamp")
        inbound = status in INBOUND_STATUSES
        if inbound:
            event_type, source_event_id, who = "sms_inbound", sid, "From"
        else:
            event_type, source_event_id, who = f"sms_{status}", f"{sid}:{status}", "To"
        identifiers, prefix = _address(params, who)
        properties = {
            "message_sid": sid,
            "status": status,
            "direction": "inbound" if inbound else "outbound",
        }
        if prefix:
            properties["address_prefix"] = prefix
        for param, prop in _PROPS:
            value = opt_str(params, param, 256)
            if value is not None:
                properties[prop] = value
        return Touchpoint(
            event_id=event_id_for(self.name, source_event_id),
            source=self.name,
            source_event_id=source_event_id,
            occurred_at=occurred,
            received_at=received_at,
            channel=source_channel(self.name, event_type),
            event_type=event_type,
            identifiers=identifiers,
            properties=properties,
        )

    def map_cloud_event(self, event: Mapping[str, Any], received_at: datetime) -> Touchpoint:
        """An Event Streams CloudEvent; only Link Shortening clicks are touches."""
        kind = req_str(event, "type", 256)
        if kind != LINK_CLICKED:
            raise FieldError("type", f"expected {LINK_CLICKED}, got {kind!r:.80}")
        event_id = req_str(event, "id", 128)
        data = event.get("data")
        if not isinstance(data, Mapping):
            raise FieldError("data", "expected a JSON object")
        try:
            occurred = parse_time(data.get("click_time"), "click_time")
            identifiers, prefix = _address(data, "to")
            link = opt_str(data, "link", 8192)
        except FieldError as exc:
            raise FieldError(f"data.{exc.field}", str(exc).split(": ", 1)[1]) from exc
        parsed = campaign_from_url(link) if link else None
        campaign = Campaign(
            source=(parsed.source if parsed else None) or "twilio",
            medium=(parsed.medium if parsed else None) or "sms",
            name=parsed.name if parsed else None,
            content=parsed.content if parsed else None,
            term=parsed.term if parsed else None,
            click_id=parsed.click_id if parsed else None,
        )
        properties = {"cloud_event_type": kind}
        sid = get_path(data, "message_sid")
        if isinstance(sid, str) and sid:
            properties["message_sid"] = sid[:64]
        if link:
            properties["link"] = redact(link.encode("utf-8")).decode("utf-8", "replace")
        if prefix:
            properties["address_prefix"] = prefix
        event_type = "sms_click"
        return Touchpoint(
            event_id=event_id_for(self.name, event_id),
            source=self.name,
            source_event_id=event_id,
            occurred_at=occurred,
            received_at=received_at,
            channel=source_channel(self.name, event_type, campaign=campaign),
            event_type=event_type,
            identifiers=identifiers,
            campaign=campaign,
            properties=properties,
        )


def _address(params: Mapping[str, Any], field: str) -> tuple[tuple[Identifier, ...], str | None]:
    """The customer's ``phone_sha256`` from a Twilio address, and its channel prefix.

    ``whatsapp:+14155550100`` is a phone number behind a prefix; the address of a
    channel that is not phone-based (``messenger:1234``) gives no identifier.
    """
    value = opt_str(params, field, 128)
    if value is None:
        return (), None
    prefix = None
    match = _PREFIX_RE.match(value.strip().lower())
    if match:
        prefix, value = match.group(1), value.strip()[len(match.group(1)) + 1 :]
        if prefix not in PHONE_PREFIXES:
            return (), prefix
    try:
        return (Identifier("phone_sha256", hash_phone(value)),), prefix
    except PIIError as exc:
        raise FieldError(field, "not a phone number") from exc
