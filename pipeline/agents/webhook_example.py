"""Example of a user's own agent: POST a webhook when a person enters ``abandoned_cart``.

Loaded into the worker's Faust app with
``JOURNEYS_AGENT_MODULES=pipeline.agents.webhook_example`` and
``ABANDONED_CART_WEBHOOK_URL=https://...``; ``docs/extending.md`` walks through it. The
agent reads ``journeys.audiences`` (Avro AudienceChange, keyed by person) with the app's
consumer and posts one small JSON document per entry, retrying a
failed post a few times before it logs and moves on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import aiohttp

from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)

SEGMENT = "abandoned_cart"
RETRIES = 3


def payload(change: dict[str, Any]) -> dict[str, Any] | None:
    """The webhook's body for an AudienceChange, or None when it is not an entry."""
    if change["segment"] != SEGMENT or change["change"] != "ENTERED":
        return None
    return {
        "event": "abandoned_cart.entered",
        "person_id": change["person_id"],
        "at": change["at"].isoformat(),
        "reason": change["reason"],
    }


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bool:
    """POST *body* as JSON; True once the receiver answered 2xx."""
    for attempt in range(RETRIES):
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(10)) as resp:
                if resp.status < 300:
                    return True
                log.warning("webhook %s answered %d", url, resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook %s failed: %s", url, exc)
        await asyncio.sleep(0.2 * 2**attempt)
    return False


def register(app: Any, settings: Settings, serde: AvroSerde, topics: Topics) -> Any:
    """Add the agent to *app*; returns it (tests drive it with ``test_context()``)."""
    url = os.environ.get("ABANDONED_CART_WEBHOOK_URL", "")
    if not url:
        raise ValueError("ABANDONED_CART_WEBHOOK_URL: required by pipeline.agents.webhook_example")
    source = app.topic(topics.audiences.name, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="abandoned-cart-webhook")
    async def abandoned_cart_webhook(stream: Any) -> None:
        async with aiohttp.ClientSession() as session:
            async for value in stream:
                body = payload(serde.decode(value, expect="AudienceChange"))
                if body is not None:
                    await post(session, url, body)

    return abandoned_cart_webhook
