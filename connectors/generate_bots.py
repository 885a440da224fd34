"""The bots of `journeys generate`: crawlers in one burst, and ad-click bots.

Every one is an anonymous id named ``bot-NNNN`` in the ground truth, never identifies
and never buys, and sends a user agent on the crawler-user-agents list, so the Segment
connector flags it (``is_bot``) and it makes no journey. The ad-click bots land from
paid search, paid social and display ads over many visits: left in, they change the
credit the data-driven models give those channels (``tests/unit/connectors/test_bots.py``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from connectors.generate_model import ACQUISITION, PAGES, SITE

BOT_AGENTS = (
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36",
    "python-requests/2.31.0",
)
#: Ad-click bots: headless automation and ad-landing-page checkers, all on the list.
AD_BOT_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36",
    "AdsBot-Google (+http://www.google.com/adsbot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/538.1 (KHTML, like Gecko) "
    "PhantomJS/2.1.1 Safari/538.1",
)
_AD_CHANNELS = ("paid_search", "paid_social", "display")


class _Truth(Protocol):
    def add(self, type_: str, value: str, owner: str) -> None: ...


class _Stats(Protocol):
    @property
    def identity(self) -> dict[str, int]: ...


class _Writer(Protocol):
    """The generator's Segment writer, as the bots use it."""

    @property
    def rng(self) -> random.Random: ...
    @property
    def ns(self) -> uuid.UUID: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def truth(self) -> _Truth: ...
    @property
    def stats(self) -> _Stats: ...

    def _message(
        self, at: datetime, owner: str, key: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...


def _site() -> tuple[tuple[str, ...], str, Sequence[Any]]:
    """The generator's pages, site and ad landings."""
    return PAGES, SITE, ACQUISITION


def crawlers(writer: _Writer, count: int) -> None:
    """Crawlers and scripts: one anonymous id each, hundreds of page views, no identity."""
    rng = writer.rng
    pages, site, _landings = _site()
    span = (writer.end - writer.start).total_seconds()
    for b in range(count):
        owner = f"bot-{b + 1:04d}"
        anon = str(uuid.uuid5(writer.ns, owner))
        writer.truth.add("anonymous_id", anon, owner)
        agent = BOT_AGENTS[b % len(BOT_AGENTS)]
        at = writer.start + timedelta(seconds=rng.uniform(0, span * 0.9))
        for i in range(rng.randint(150, 400)):
            if at >= writer.end:
                break
            path = rng.choice(pages[:-1])
            writer._message(
                at,
                owner,
                f"page:{i}",
                {
                    "anonymousId": anon,
                    "type": "page",
                    "name": path,
                    "properties": {"path": path, "url": f"{site}{path}"},
                    "context": {
                        "library": {"name": "analytics.js", "version": "4.1.0"},
                        "userAgent": agent,
                        "page": {"path": path, "url": f"{site}{path}"},
                    },
                },
            )
            writer.stats.identity["bot_page_views"] += 1
            at += timedelta(seconds=rng.uniform(0.5, 6))
        writer.stats.identity["bots"] += 1


def ad_bots(writer: _Writer, rng: random.Random, count: int) -> None:
    """Ad-click bots: one anonymous id each, 35 to 60 visits over the period, each
    landing from a paid channel's ad (its UTM and click id) and browsing a few pages;
    never an identity, never an order."""
    span = (writer.end - writer.start).total_seconds()
    pages, site, landings = _site()
    ads = [a for a in landings if a[0] in _AD_CHANNELS]
    first = writer.stats.identity["bots"]
    for b in range(count):
        owner = f"bot-{first + b + 1:04d}"
        anon = str(uuid.uuid5(writer.ns, owner))
        writer.truth.add("anonymous_id", anon, owner)
        agent = AD_BOT_AGENTS[b % len(AD_BOT_AGENTS)]
        visits = sorted(rng.uniform(0, span * 0.95) for _ in range(rng.randint(35, 60)))
        for v, offset in enumerate(visits):
            at = writer.start + timedelta(seconds=offset)
            _channel, _w, campaign, query, referrer = rng.choice(ads)
            for i in range(rng.randint(3, 6)):
                path = pages[0] if i == 0 else rng.choice(pages[1:-1])
                url = f"{site}{path}{query if i == 0 else ''}"
                page: dict[str, Any] = {"path": path, "url": url}
                context: dict[str, Any] = {
                    "library": {"name": "analytics.js", "version": "4.1.0"},
                    "userAgent": agent,
                    "page": page,
                }
                if i == 0 and referrer:
                    page["referrer"] = referrer
                if i == 0 and campaign:
                    context["campaign"] = dict(campaign)
                writer._message(
                    at,
                    owner,
                    f"ad:{v}:{i}",
                    {
                        "anonymousId": anon,
                        "type": "page",
                        "name": path,
                        "properties": {"path": path, "url": url},
                        "context": context,
                    },
                )
                writer.stats.identity["bot_page_views"] += 1
                at += timedelta(seconds=rng.uniform(1, 8))
        writer.stats.identity["bots"] += 1
