"""The Segment file of `journeys generate`: ``_SegmentWriter`` builds the page, track,
identify and screen calls of customers on their own and shared devices (logins, sign-up
forms, cart adds and orders), of store kiosks and of anonymous visitors, each with its
true owner (the bots of ``generate_bots`` write through it too); ``_malformed`` spoils a
call the way a broken tag or pipe would, so that it must end as a dead letter.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from connectors.generate_model import (
    JUNK_IDS,
    PAGES,
    SITE,
    STORES,
    GenStats,
    _Person,
    _pick,
    _Truth,
    _ts,
)

#: The browser of a household's shared tablet.
TABLET_AGENT = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Safari/604.1"


class _SegmentWriter:
    """The Segment calls of customers, kiosks, bots and anonymous visitors."""

    def __init__(
        self,
        rng: random.Random,
        ns: uuid.UUID,
        start: datetime,
        end: datetime,
        truth: _Truth,
        stats: GenStats,
    ) -> None:
        self.rng = rng
        self.ns = ns
        self.start = start
        self.end = end
        self.truth = truth
        self.stats = stats
        self.messages: list[tuple[datetime, dict[str, Any], str]] = []
        # Carts draw from their own stream, so the rest of the file is what it was.
        self.carts = random.Random(f"journeys-carts:{ns.int}")
        for key in ("junk_values", "kiosk_sessions", "bots", "bot_page_views", "visitors"):
            stats.identity.setdefault(key, 0)

    def _message(self, at: datetime, owner: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        msg = {
            **body,
            "messageId": str(uuid.uuid5(self.ns, f"{owner}:{key}:{at.timestamp()}")),
            "timestamp": _ts(at),
        }
        self.messages.append((at, msg, owner))
        return msg

    def customer(self, p: _Person, days: int) -> None:
        rng, truth = self.rng, self.truth
        seen: set[str] = set()
        at = self.start + timedelta(seconds=rng.uniform(0, days * 86400 * 0.8))
        shared = [d for d in p.devices if d.owner != p.person]
        for session in range(rng.randint(1, 5)):
            if at >= self.end:
                break
            # a household member's first visit is on the family tablet
            device = shared[0] if shared and session == 0 else rng.choice(p.devices)
            first_on_device = device.anon not in seen
            if first_on_device:
                seen.add(device.anon)
                p.anon_ids.append(device.anon)
                truth.add("anonymous_id", device.anon, device.owner)
            channel, campaign, query, referrer = _pick(rng)
            self.stats.by_channel[channel] = self.stats.by_channel.get(channel, 0) + 1
            logged_in = p.user_id is not None and (first_on_device or rng.random() < 0.5)
            base: dict[str, Any] = {"anonymousId": device.anon}
            if logged_in:
                base["userId"] = p.user_id
                truth.add("user_id", str(p.user_id), p.person)
            elif rng.random() < 0.03:  # a tag that sends userId: String(undefined)
                base["userId"] = rng.choice(JUNK_IDS[:2])
                self.stats.identity["junk_values"] += 1
            if device.owner != p.person:
                agent = TABLET_AGENT
            elif device.is_app or rng.random() < 0.5:
                agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile"
            else:
                agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"
            context: dict[str, Any] = {
                "library": {"name": "analytics.js", "version": "4.1.0"},
                "userAgent": agent,
            }
            if campaign:
                context["campaign"] = campaign
            for i in range(rng.randint(1, 4)):
                path = rng.choice(PAGES)
                page = {"path": path, "url": f"{SITE}{path}{query if i == 0 else ''}"}
                if i == 0 and referrer:
                    page["referrer"] = referrer
                elif i > 0:
                    page["referrer"] = f"{SITE}/"
                self._message(
                    at,
                    p.person,
                    f"page:{i}",
                    {
                        **base,
                        "type": "page",
                        "name": path,
                        "properties": {"path": path, "url": page["url"]},
                        "context": {**context, "page": page},
                    },
                )
                at += timedelta(seconds=rng.uniform(10, 300))
            # The first visit on a device is a login, or a sign-up form for guests; a
            # logged-in visitor sometimes updates the profile.
            if first_on_device or (logged_in and rng.random() < 0.4):
                traits: dict[str, Any] = {"email": p.email}
                truth.email(p.email, p.person)
                if p.phone is not None and (first_on_device or rng.random() < 0.5):
                    traits["phone"] = p.phone
                    truth.phone(p.phone, p.person)
                traits["plan"] = "member" if p.user_id is not None else "newsletter"
                self._message(
                    at,
                    p.person,
                    "id",
                    {**base, "type": "identify", "traits": traits, "context": context},
                )
            if rng.random() < 0.25:
                revenue = round(rng.uniform(15, 240), 2)
                order_id = f"o-{p.n}-{int(at.timestamp())}"
                self.cart_add(p, at, base, context, revenue, order_id)
                self._message(
                    at,
                    p.person,
                    f"order:{order_id}",
                    {
                        **base,
                        "type": "track",
                        "event": "Order Completed",
                        "properties": {
                            "order_id": order_id,
                            "revenue": revenue,
                            "currency": "USD",
                        },
                        "context": context,
                    },
                )
                self.stats.purchases += 1
            elif self.carts.random() < 0.12:  # a cart left behind
                price = round(self.carts.uniform(10, 120), 2)
                self.cart_add(p, at, base, context, price, f"left-{session}")
            at += timedelta(hours=rng.uniform(2, 24 * 6))

    def cart_add(
        self,
        p: _Person,
        at: datetime,
        base: dict[str, Any],
        context: dict[str, Any],
        price: float,
        key: str,
    ) -> None:
        """A ``Product Added`` before an order (or left behind): on this device, or in
        two cases in five on another of the customer's own devices (the app's cart
        follows the customer to the web), logged in there."""
        carts = self.carts
        own = [d for d in p.devices if d.owner == p.person and d.anon != base["anonymousId"]]
        when = max(self.start, at - timedelta(seconds=carts.uniform(60, 5400)))
        body: dict[str, Any] = dict(base)
        ctx = dict(context)
        if own and p.user_id is not None and carts.random() < 0.4:
            device = carts.choice(own)
            body = {"anonymousId": device.anon, "userId": p.user_id}
            self.truth.add("anonymous_id", device.anon, p.person)
            if device.is_app:
                ctx = {
                    "library": {"name": "analytics-ios", "version": "4.1.8"},
                    "app": {"name": "Shop", "version": "5.1.0"},
                    "device": {"type": "ios"},
                }
        quantity = carts.choice((1, 1, 1, 2, 3))
        self._message(
            when,
            p.person,
            f"cart:{key}",
            {
                **body,
                "type": "track",
                "event": "Product Added",
                "properties": {
                    "product_id": f"sku-{carts.randrange(1000):04d}",
                    "price": round(price / quantity, 2),
                    "quantity": quantity,
                },
                "context": ctx,
            },
        )
        self.stats.cart_adds += 1

    def kiosks(self, population: list[_Person], people: int) -> None:
        """Store kiosks: one device id each, on which customers log in (a fresh anonymous
        id per session), and a few walk-ins who browse without logging in."""
        rng, truth = self.rng, self.truth
        accounts = [p for p in population if p.user_id is not None]
        span = (self.end - self.start).total_seconds()
        walk_in = 0
        for _location, store in STORES:
            kiosk = str(uuid.uuid5(self.ns, f"kiosk:{store}"))
            truth.add("device_id", kiosk, f"kiosk-{store}")
            users = rng.sample(accounts, min(len(accounts), max(5, people // 40)))
            visits: list[tuple[_Person | None, str]] = [(p, p.person) for p in users]
            for _ in range(2):
                walk_in += 1
                visits.append((None, f"visitor-kiosk-{walk_in:04d}"))
            for p, owner in visits:
                at = self.start + timedelta(seconds=rng.uniform(0, span * 0.98))
                anon = str(uuid.uuid5(self.ns, f"{owner}:kiosk:{store}:{at.timestamp()}"))
                truth.add("anonymous_id", anon, owner)
                base: dict[str, Any] = {"anonymousId": anon}
                if p is not None:
                    base["userId"] = p.user_id
                    truth.add("user_id", str(p.user_id), p.person)
                context = {
                    "library": {"name": "analytics-react-native", "version": "2.19.0"},
                    "app": {"name": "Store Kiosk", "version": "3.2.0"},
                    "device": {"id": kiosk, "type": "kiosk", "model": "iPad13,16"},
                    "os": {"name": "iPadOS", "version": "17.1"},
                }
                for i in range(rng.randint(2, 5)):
                    screen = rng.choice(("Product Finder", "Size Guide", "Stock Check"))
                    self._message(
                        at,
                        owner,
                        f"kiosk:{store}:{i}",
                        {
                            **base,
                            "type": "screen",
                            "name": screen,
                            "properties": {"store_id": store},
                            "context": context,
                        },
                    )
                    at += timedelta(seconds=rng.uniform(15, 120))
                self.stats.identity["kiosk_sessions"] += 1
        self.stats.identity["kiosks"] = len(STORES)

    def visitors(self, count: int) -> None:
        """Anonymous visitors who never identify: a person of their own each."""
        rng = self.rng
        span = (self.end - self.start).total_seconds()
        for v in range(count):
            owner = f"visitor-{v + 1:04d}"
            anon = str(uuid.uuid5(self.ns, owner))
            self.truth.add("anonymous_id", anon, owner)
            at = self.start + timedelta(seconds=rng.uniform(0, span * 0.95))
            channel, campaign, query, referrer = _pick(rng)
            self.stats.by_channel[channel] = self.stats.by_channel.get(channel, 0) + 1
            for i in range(rng.randint(1, 3)):
                path = rng.choice(PAGES)
                page: dict[str, str] = {
                    "path": path,
                    "url": f"{SITE}{path}{query if i == 0 else ''}",
                }
                if i == 0 and referrer:
                    page["referrer"] = referrer
                context: dict[str, Any] = {
                    "library": {"name": "analytics.js", "version": "4.1.0"},
                    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0",
                    "page": page,
                }
                if campaign:
                    context["campaign"] = campaign
                self._message(
                    at,
                    owner,
                    f"page:{i}",
                    {
                        "anonymousId": anon,
                        "type": "page",
                        "name": path,
                        "properties": {"path": path, "url": page["url"]},
                        "context": context,
                    },
                )
                at += timedelta(seconds=rng.uniform(10, 300))
            self.stats.identity["visitors"] += 1


def _malformed(rng: random.Random, msg: dict[str, Any]) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return json.dumps(msg)[: rng.randrange(5, 40)]  # truncated JSON
    if kind == 1:
        return json.dumps({**msg, "timestamp": "yesterday"})  # bad timestamp
    bad = {k: v for k, v in msg.items() if k not in ("anonymousId", "userId")}
    return json.dumps(bad)  # no identifier at all
