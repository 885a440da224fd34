"""Segment Spec messages (track, page, screen, identify, alias, group, batch).

Segment's and RudderStack's SDKs send these; `journeys replay --source segment` reads
them one per line. Field reference: https://segment.com/docs/connections/spec/common/

* ``timestamp`` (else ``originalTimestamp``, ``sentAt``) is event time; without any,
  the time Journeys received the message, as the Spec's HTTP API does.
* ``messageId`` is the source event id (a content hash when absent, so replays dedupe).
* ``anonymousId`` → ``anonymous_id``, ``userId`` → ``user_id``, ``context.device.id`` →
  ``device_id``, ``traits.email`` / ``context.traits.email`` → ``email_sha256``,
  ``traits.phone`` → ``phone_sha256``, ``traits.loyalty_id`` → ``loyalty_id``, and for
  ``alias`` the ``previousId`` → ``anonymous_id``. Raw e-mails and phones stop here.
* ``page`` → ``page_view``, ``screen`` → ``screen_view``, ``track`` → the snake-cased
  event name (``Order Completed`` → ``order_completed``), identify/alias/group as named.
* The channel follows GA4's default channel grouping over ``context.campaign``, the
  click ids in ``context.page.url`` and ``context.page.referrer``.
* ``context.userAgent`` is read with maintained lists (:mod:`connectors.useragents`):
  a known bot or crawler sets ``is_bot``; browser, OS and device type come from
  ua-parser. A mobile SDK's ``context.device.type`` (``ios``, ``android``) and
  ``context.device.model`` win over the user agent.
* ``context.consent.categoryPreferences`` (category -> granted) is kept as ``consent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import (
    FieldError,
    content_id,
    email_identifier,
    get_path,
    opt_float,
    opt_str,
    parse_time,
    phone_identifier,
    snake,
)
from connectors.useragents import UserAgent, describe
from pipeline.core.channels import campaign_from_url, web_channel
from pipeline.core.model import Campaign, Identifier, Touchpoint, event_id_for

MESSAGE_TYPES = ("track", "page", "screen", "identify", "alias", "group")
_EVENT_TYPES = {"page": "page_view", "screen": "screen_view"}
_MOBILE_OS = ("ios", "android", "ipados")
_MAX_CONSENT_CATEGORIES = 64


class SegmentSource:
    name: str = "segment"
    formats: tuple[str, ...] = ("jsonl",)

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        if record.get("type") == "batch" or ("batch" in record and "type" not in record):
            batch = record.get("batch")
            if not isinstance(batch, list):
                raise FieldError("batch", "expected an array of messages")
            out: list[Touchpoint] = []
            for i, item in enumerate(batch):
                if not isinstance(item, Mapping):
                    raise FieldError(f"batch[{i}]", "expected a JSON object")
                try:
                    out.append(self.map_message(item, received_at))
                except FieldError as exc:
                    raise FieldError(f"batch[{i}].{exc.field}", str(exc).split(": ", 1)[1]) from exc
            return out
        return [self.map_message(record, received_at)]

    def map_message(self, msg: Mapping[str, Any], received_at: datetime) -> Touchpoint:
        kind = msg.get("type")
        if kind not in MESSAGE_TYPES:
            raise FieldError(
                "type", f"expected one of {', '.join(MESSAGE_TYPES)}, got {kind!r:.30}"
            )
        stamp = msg.get("timestamp") or msg.get("originalTimestamp") or msg.get("sentAt")
        # The Spec: "timestamp ... defaults to the current time" when the caller omits it.
        occurred = received_at if stamp is None else parse_time(stamp, "timestamp")
        source_event_id = opt_str(msg, "messageId", 256) or content_id(msg)
        if msg.get("userId") in (None, "") and msg.get("anonymousId") in (None, ""):
            raise FieldError("userId", "one of userId or anonymousId is required")
        identifiers = _identifiers(msg, kind)

        page_url = opt_str(msg, "context.page.url") or opt_str(msg, "properties.url")
        referrer = opt_str(msg, "context.page.referrer") or opt_str(msg, "properties.referrer")
        campaign = _campaign(msg, page_url)
        if kind == "track":
            event = opt_str(msg, "event", 200)
            if event is None:
                raise FieldError("event", "required for a track call")
            event_type = snake(event) or "track"
        else:
            event_type = _EVENT_TYPES.get(kind, kind)
        props = msg.get("properties")
        if props is not None and not isinstance(props, Mapping):
            raise FieldError("properties", "expected a JSON object")
        revenue = opt_float(msg, "properties.revenue")
        if revenue is None:
            revenue = opt_float(msg, "properties.total")
        properties = {"message_type": kind}
        if kind == "track" and msg.get("event"):
            properties["event"] = str(msg["event"])[:200]
        if kind == "track":  # a cart line (Product Added/Removed): its value, for profiles
            for name in ("price", "quantity"):
                number = opt_float(msg, f"properties.{name}")
                if number is not None:
                    properties[name] = f"{number:g}"
        if kind in ("page", "screen") and opt_str(msg, "name", 200):
            properties["name"] = str(msg["name"])[:200]
        if page_url:
            properties["page_url"] = page_url
        if get_path(msg, "context.app.name") or kind == "screen":
            properties["platform"] = "app"
        else:
            properties["platform"] = "web"
        agent = _user_agent(msg)
        if agent is not None and agent.browser:
            properties["browser"] = agent.browser
        os_name = opt_str(msg, "context.os.name", 64) or (agent.os if agent else None)
        if os_name:
            properties["os"] = os_name
        return Touchpoint(
            event_id=event_id_for(self.name, source_event_id),
            source=self.name,
            source_event_id=source_event_id,
            occurred_at=occurred,
            received_at=received_at,
            channel=web_channel(campaign, referrer, page_url),
            event_type=event_type,
            identifiers=tuple(identifiers),
            campaign=campaign,
            referrer=referrer,
            device_type=_device_type(msg, agent),
            store_id=opt_str(msg, "properties.store_id"),
            order_id=opt_str(msg, "properties.order_id"),
            revenue=revenue,
            currency=opt_str(msg, "properties.currency", 8),
            properties=properties,
            is_bot=agent is not None and agent.is_bot,
            consent=_consent(msg),
        )


def _identifiers(msg: Mapping[str, Any], kind: str) -> list[Identifier]:
    out: list[Identifier] = []
    for field, type_ in (("userId", "user_id"), ("anonymousId", "anonymous_id")):
        value = opt_str(msg, field, 256)
        if value is not None:
            out.append(Identifier(type_, value))
    if kind == "alias":
        previous = opt_str(msg, "previousId", 256)
        if previous is None:
            raise FieldError("previousId", "required for an alias call")
        out.append(Identifier("anonymous_id", previous))
    device = opt_str(msg, "context.device.id", 256)
    if device is not None:
        out.append(Identifier("device_id", device))
    for make, field in ((email_identifier, "email"), (phone_identifier, "phone")):
        found = make(msg, f"traits.{field}") or make(msg, f"context.traits.{field}")
        if found is not None:
            out.append(found)
    loyalty = opt_str(msg, "traits.loyalty_id", 128) or opt_str(msg, "context.traits.loyalty_id")
    if loyalty is not None:
        out.append(Identifier("loyalty_id", loyalty))
    return list(dict.fromkeys(out))


def _campaign(msg: Mapping[str, Any], page_url: str | None) -> Campaign | None:
    ctx = get_path(msg, "context.campaign")
    from_url = campaign_from_url(page_url) if page_url else None
    if isinstance(ctx, Mapping) and ctx:
        camp = Campaign(
            source=opt_str(ctx, "source", 256),
            medium=opt_str(ctx, "medium", 256),
            name=opt_str(ctx, "name", 256),
            content=opt_str(ctx, "content", 256),
            term=opt_str(ctx, "term", 256),
            click_id=from_url.click_id if from_url else None,
        )
        return None if camp.is_empty() else camp
    return from_url


def _user_agent(msg: Mapping[str, Any]) -> UserAgent | None:
    value = get_path(msg, "context.userAgent")
    if not isinstance(value, str) or not value.strip():
        return None
    return describe(value)


def _consent(msg: Mapping[str, Any]) -> dict[str, bool] | None:
    """``context.consent.categoryPreferences``: category -> granted; None when absent."""
    prefs = get_path(msg, "context.consent.categoryPreferences")
    if prefs is None:
        return None
    if not isinstance(prefs, Mapping):
        raise FieldError("context.consent.categoryPreferences", "expected a JSON object")
    if len(prefs) > _MAX_CONSENT_CATEGORIES:
        raise FieldError(
            "context.consent.categoryPreferences",
            f"more than {_MAX_CONSENT_CATEGORIES} categories",
        )
    out: dict[str, bool] = {}
    for category, granted in prefs.items():
        if not isinstance(granted, bool):
            raise FieldError(
                f"context.consent.categoryPreferences.{str(category)[:64]}",
                "expected true or false",
            )
        out[str(category)[:128]] = granted
    return out


def _device_type(msg: Mapping[str, Any], agent: UserAgent | None) -> str | None:
    """A mobile SDK's own device type and model first, then the parsed user agent."""
    model = opt_str(msg, "context.device.model", 128) or ""
    if model.startswith("iPad"):
        return "tablet"
    dtype = opt_str(msg, "context.device.type", 64)
    if dtype:
        low = dtype.lower()
        return "mobile" if low in _MOBILE_OS else low
    os_name = (opt_str(msg, "context.os.name", 64) or "").lower()
    if os_name in _MOBILE_OS and agent is None:
        return "mobile"
    return agent.device_type if agent is not None else None
