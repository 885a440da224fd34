"""``journeys generate``: synthetic multi-channel logs in the sources' own formats.

Deterministic for a given seed. Writes, into the output folder:

* ``segment.jsonl``: Segment Spec page/track/identify/screen calls of web and app
  visitors, with UTM campaigns, click ids and referrers for every acquisition channel,
  logins and sign-up forms that link anonymous ids to user ids, e-mails and phones,
  purchases (``Order Completed``) with revenue, cart adds (``Product Added``; some left
  behind, some in the app before a purchase on the web), in-store kiosk sessions, bots, and a
  small share of malformed lines (they must end as dead letters);
* ``sendgrid.jsonl``: SendGrid Event Webhook events (one per line) of campaign e-mails:
  processed, delivered, opens, and clicks on the campaign URL with its UTMs;
* ``twilio.jsonl``: Twilio status callbacks (form parameters as a JSON object, with a
  ``Timestamp``) of SMS campaigns, and Link Shortening click CloudEvents;
* ``shopify.jsonl``: ``orders/create`` bodies: online (``web``) orders with their landing
  page, POS orders with a ``location_id``, and a few marketplace orders;
* ``pos.csv``: store transactions (purchases, returns, loyalty visits);
* ``store_signals.csv``: QR-code scans and in-store Wi-Fi logins;
* ``ads.csv``: ad clicks in the ad-click export layout;
* ``interactions.jsonl``: chats and calls;
* ``ground_truth.csv``: the true owner of every identifier that occurs in the files
  (``identifier_type,identifier_value,person``, e-mails and phones hashed as the
  connectors hash them), for evaluating identity stitching;
* ``events_truth.csv``: the true owner of every source event
  (``source,source_event_id,person``, with the ``source_event_id`` each connector
  derives);
* ``manifest.json``: what was written and how many records of each kind.

Identity realism (``journeys evaluate`` scores stitching against the two truth files):

* Every customer's identifiers are linked by at least one event of their own: the
  first session on each device is a login or a sign-up form (an ``identify`` with the
  e-mail, and the phone of SMS subscribers); a loyalty card is enrolled at the till
  with the e-mail. Anonymous visitors who never identify are entities of their own
  (``visitor-NNNN``), so the truth holds nothing that no event could link.
* Family tablets: a web browser shared by two customers of a household who both log
  in. Store kiosks: one ``device_id`` per store, on which several customers log in
  (each session with a fresh anonymous id). An identifier used by several people
  belongs to none of them: its owner is the household or the store
  (``household-NNNN``, ``kiosk-<store>``), so a stitcher scores best when it keeps
  them apart from every customer.
* Typos: an e-mail mistyped at the till (with the loyalty card) or at checkout (with
  the Shopify customer id) is a separate ``email_sha256`` that truly belongs to the
  customer: ground truth lists it under the customer.
* Junk: blocklisted values (``"null"``, ``"undefined"``, ``"0"``, ``test@test.com``,
  ``(555) 555-5555``) in some records. They belong to nobody and are not in
  ``ground_truth.csv``; the events that carry them are still their customer's.
* Bots: anonymous ids with hundreds of page views and no identity (``bot-NNNN``):
  crawlers in one burst, and ad-click bots (a headless browser, Google's AdsBot) that
  land from paid search, paid social and display ads over many visits and never buy.
  Their user agents are on the crawler-user-agents list, so the connector flags them.

Every file has a share of malformed records (``malformed_share``, at least one per file
when it is above zero) that must end as dead letters. Ground truth covers them too.
The Segment file uses the main random stream, the customers' profiles (phones,
loyalty cards, households) a second one and the other files a third one.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from connectors.generate_bots import ad_bots, crawlers
from connectors.pos import COLUMNS as POS_CSV_COLUMNS
from connectors.store_signals import COLUMNS as STORE_SIGNAL_COLUMNS
from pipeline.core.pii import hash_email, hash_phone

#: (channel, weight, context.campaign, page query string, referrer)
ACQUISITION: tuple[tuple[str, float, dict[str, str] | None, str, str | None], ...] = (
    ("direct", 0.22, None, "", None),
    ("organic_search", 0.24, None, "", "https://www.google.com/"),
    (
        "paid_search",
        0.14,
        {"source": "google", "medium": "cpc", "name": "brand-search"},
        "?utm_source=google&utm_medium=cpc&utm_campaign=brand-search&gclid=Cj0KCQ",
        "https://www.google.com/",
    ),
    (
        "paid_social",
        0.1,
        {"source": "facebook", "medium": "paid_social", "name": "autumn-sale"},
        "?utm_source=facebook&utm_medium=paid_social&utm_campaign=autumn-sale&fbclid=IwAR2x",
        "https://l.facebook.com/",
    ),
    ("organic_social", 0.08, None, "", "https://t.co/"),
    (
        "email",
        0.12,
        {"source": "newsletter", "medium": "email", "name": "weekly-deals"},
        "?utm_source=newsletter&utm_medium=email&utm_campaign=weekly-deals",
        None,
    ),
    (
        "display",
        0.05,
        {"source": "criteo", "medium": "display", "name": "retargeting"},
        "?utm_source=criteo&utm_medium=display&utm_campaign=retargeting",
        None,
    ),
    ("referral", 0.05, None, "", "https://www.retailmenot.com/"),
)

PAGES = ("/", "/c/shoes", "/c/jackets", "/p/trail-runner-2", "/p/rain-shell", "/cart")
SITE = "https://shop.example.com"


@dataclass
class GenStats:
    people: int = 0
    messages: int = 0
    malformed: int = 0
    purchases: int = 0
    cart_adds: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    #: records written per file name (CSV: data rows), and the malformed ones among them
    files: dict[str, int] = field(default_factory=dict)
    malformed_by_file: dict[str, int] = field(default_factory=dict)
    #: the identity realism: households, kiosks, typos, junk values, bots, visitors
    identity: dict[str, int] = field(default_factory=dict)


def _pick(rng: random.Random) -> tuple[str, dict[str, str] | None, str, str | None]:
    roll = rng.random() * sum(a[1] for a in ACQUISITION)
    for channel, weight, campaign, query, referrer in ACQUISITION:
        roll -= weight
        if roll <= 0:
            return channel, campaign, query, referrer
    last = ACQUISITION[-1]
    return last[0], last[2], last[3], last[4]


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- ground truth --------------------------------------------------------------------


@dataclass
class _Truth:
    """The true owner of every identifier written, and of every source event."""

    identifiers: dict[tuple[str, str], str] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, type_: str, value: str, owner: str) -> None:
        """Record an identifier's owner; the first owner recorded stays."""
        self.identifiers.setdefault((type_, value), owner)

    def email(self, email: str, owner: str) -> None:
        self.add("email_sha256", hash_email(email), owner)

    def phone(self, phone: str, owner: str) -> None:
        self.add("phone_sha256", hash_phone(phone), owner)


#: Blocklisted values (pipeline.core.identity.DEFAULT_BLOCKLIST) that real feeds carry.
JUNK_IDS = ("null", "undefined", "0")
JUNK_EMAIL = "test@test.com"
JUNK_PHONE = "(555) 555-5555"
TABLET_AGENT = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Safari/604.1"


@dataclass
class _Device:
    anon: str
    is_app: bool
    owner: str  # the person, or the household of a shared tablet


@dataclass
class _Person:
    n: int
    person: str
    email: str
    user_id: str | None
    devices: list[_Device]
    phone: str | None = None  # E.164
    loyalty_id: str | None = None
    shopify_id: int | None = None
    #: anonymous ids seen in segment.jsonl (the other channels reuse only these)
    anon_ids: list[str] = field(default_factory=list)


def _typo(rng: random.Random, email: str) -> str:
    """*email* as a clerk or shopper mistypes it: another valid, different address."""
    local, _, domain = email.partition("@")
    kind = rng.randrange(3)
    if kind == 0:  # a doubled letter in the local part
        i = rng.randrange(len(local))
        local = local[: i + 1] + local[i:]
    elif kind == 1:  # a dropped character in the local part
        i = rng.randrange(1, len(local))
        local = local[:i] + local[i + 1 :]
    else:  # two letters of the domain swapped
        name, _, tld = domain.partition(".")
        i = rng.randrange(len(name) - 1)
        domain = f"{name[:i]}{name[i + 1]}{name[i]}{name[i + 2 :]}.{tld}"
    typo = f"{local}@{domain}"
    return typo if typo != email else f"{local}{local[-1]}@{domain}"


def generate(
    out: Path,
    people: int = 200,
    days: int = 30,
    seed: int = 7,
    end: datetime | None = None,
    malformed_share: float = 0.01,
) -> GenStats:
    """Write the synthetic logs for *people* over *days* ending at *end* into *out*."""
    rng = random.Random(seed)
    profiles = random.Random(f"journeys-profiles:{seed}")
    end = end or datetime(2026, 11, 1, tzinfo=UTC)
    start = end - timedelta(days=days)
    out.mkdir(parents=True, exist_ok=True)
    stats = GenStats(people=people)
    truth = _Truth()
    ns = uuid.UUID(int=seed)
    population: list[_Person] = []
    for n in range(people):
        person = f"p{n:06d}"
        user_id = f"u{rng.randrange(10**8):08d}" if rng.random() < 0.6 else None
        email = f"customer{n}.{rng.randrange(1000)}@example.net"
        devices = [
            _Device(str(uuid.uuid5(ns, f"{person}:anon:{d}")), d == 1, person)
            for d in range(rng.choice((1, 1, 2)))
        ]
        p = _Person(n, person, email, user_id, devices)
        if profiles.random() < 0.7:
            area = profiles.choice((212, 312, 415, 617, 646, 718))
            p.phone = f"+1{area}{200 + n // 10000 % 800}{n % 10000:04d}"
        if profiles.random() < 0.45:
            p.loyalty_id = f"LOY-{10000 + n * 7:06d}"
        population.append(p)
    _households(profiles, population, ns, stats)

    segment = _SegmentWriter(rng, ns, start, end, truth, stats)
    for p in population:
        segment.customer(p, days)
    segment.kiosks(population, people)
    crawlers(segment, max(2, people // 100))
    segment.visitors(max(1, people // 10))
    # After everything else, with their own random stream: the rest of the data does
    # not change with them.
    ad_bots(segment, random.Random(f"journeys-ad-bots:{seed}"), max(2, people // 50))
    messages = sorted(segment.messages, key=lambda m: m[0])
    with (out / "segment.jsonl").open("w", encoding="utf-8") as fh:
        for _at, msg, owner in messages:
            if rng.random() < malformed_share:
                fh.write(_malformed(rng, msg) + "\n")
                stats.malformed += 1
            else:
                fh.write(json.dumps(msg, separators=(",", ":")) + "\n")
            truth.events.append(("segment", msg["messageId"], owner))
            stats.messages += 1
    stats.files["segment.jsonl"] = stats.messages
    stats.malformed_by_file["segment.jsonl"] = stats.malformed
    _other_channels(out, population, start, end, seed, malformed_share, stats, truth)
    _store_signals(out, population, start, end, seed, malformed_share, stats, truth)
    with (out / "ground_truth.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["identifier_type", "identifier_value", "person"])
        writer.writerows((t, v, owner) for (t, v), owner in truth.identifiers.items())
    with (out / "events_truth.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "source_event_id", "person"])
        writer.writerows(truth.events)
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "people": people,
                "days": days,
                "files": stats.files,
                "malformed": stats.malformed,
                "malformed_by_file": stats.malformed_by_file,
                "purchases": stats.purchases,
                "cart_adds": stats.cart_adds,
                "sessions_by_channel": stats.by_channel,
                "identity": stats.identity,
                "truth": {
                    "identifiers": len(truth.identifiers),
                    "events": len(truth.events),
                },
            },
            indent=2,
        )
        + "\n"
    )
    return stats


def _households(
    rng: random.Random, population: list[_Person], ns: uuid.UUID, stats: GenStats
) -> None:
    """Pair some customers who both have an account into households with a shared tablet."""
    members = [p for p in population if p.user_id is not None]
    count = min(len(members) // 2, max(1, len(population) // 50))
    chosen = rng.sample(members, 2 * count)
    for h in range(count):
        household = f"household-{h + 1:04d}"
        tablet = _Device(str(uuid.uuid5(ns, f"{household}:tablet")), False, household)
        for p in chosen[2 * h : 2 * h + 2]:
            p.devices.append(tablet)
    stats.identity["households"] = count


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


# ---- the other sources ---------------------------------------------------------------

#: (marketing_campaign_id, name, category, landing path, utm_campaign)
EMAIL_CAMPAIGNS = (
    (41001, "Autumn Sale 2026", "autumn sale", "/c/jackets", "autumn_sale"),
    (41002, "Weekly Deals", "newsletter", "/", "weekly-deals"),
    (41003, "Trail Runner Launch", "launch", "/p/trail-runner-2", "trail_runner_launch"),
)
#: (name, landing path)
SMS_CAMPAIGNS = (("flash_sale", "/c/shoes"), ("back_in_stock", "/p/rain-shell"))
#: (platform, click id parameter, campaign, keyword)
AD_PLATFORMS = (
    ("google", "gclid", "brand-search", "shop example"),
    ("google", "gclid", "autumn_search", "rain jacket"),
    ("microsoft", "msclkid", "brand_search", "shop example"),
    ("meta", "fbclid", "autumn-sale", ""),
    ("tiktok", "ttclid", "trail-runner-ugc", ""),
    ("criteo", "", "retargeting", ""),
)
#: (Shopify location id, POS store code)
STORES = ((905684977, "NYC-05"), (905684978, "BOS-01"), (905684979, "SFO-02"))
MARKETPLACES = (("amazon", 1780363), ("ebay", 2417875), ("tiktok", 4383523))
SHOP_NUMBER = "+15017250604"
ACCOUNT_SID = "AC" + "a" * 32
POS_COLUMNS = list(POS_CSV_COLUMNS)
ADS_COLUMNS = [
    "click_id",
    "click_time",
    "platform",
    "click_id_param",
    "campaign",
    "ad_group",
    "keyword",
    "ad_id",
    "creative",
    "landing_page_url",
    "device",
    "cost",
    "currency",
    "email",
    "email_sha256",
    "device_id",
    "user_id",
    "anonymous_id",
]

#: (event time, record, true owner) of one source record
Events = list[tuple[datetime, dict[str, Any], str]]


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _b64id(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(22))


def _national(phone: str) -> str:
    """``+14155550134`` as a North American shop clerk types it: ``(415) 555-0134``."""
    return f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"


def _local(at: datetime) -> str:
    """ISO-8601 in the shop's zone (UTC-4), as Shopify writes times."""
    return at.astimezone(timezone(timedelta(hours=-4))).isoformat(timespec="seconds")


def _other_channels(
    out: Path,
    population: list[_Person],
    start: datetime,
    end: datetime,
    seed: int,
    malformed_share: float,
    stats: GenStats,
    truth: _Truth,
) -> None:
    rng = random.Random(f"journeys-channels:{seed}")
    ident = stats.identity
    for key in ("typos", "junk_values"):
        ident.setdefault(key, 0)
    span = (end - start).total_seconds()

    def within(at: datetime) -> bool:
        return start <= at <= end

    # SendGrid: each campaign goes to most people; some open, fewer click.
    sendgrid: Events = []
    for k, (camp_id, name, category, path, utm) in enumerate(EMAIL_CAMPAIGNS):
        sent = start + timedelta(seconds=span * (0.1 + 0.3 * k))
        for p in population:
            if rng.random() > 0.7:
                continue
            message_id = f"{_hex(rng, 11)}.dfd.{_hex(rng, 6)}.filter0001.{rng.randrange(99999)}.0"
            common: dict[str, Any] = {
                "email": p.email,
                "smtp-id": f"<{message_id[:22]}@ismtpd-{rng.randrange(1000)}>",
                "category": [category, "newsletter"] if k else category,
                "marketing_campaign_id": camp_id,
                "marketing_campaign_name": name,
                "sg_message_id": message_id,
            }
            if p.user_id:
                common["user_id"] = p.user_id  # a custom argument set at send time
            at = sent + timedelta(seconds=rng.uniform(0, 900))
            steps: list[tuple[str, datetime, dict[str, Any]]] = [("processed", at, {})]
            at += timedelta(seconds=rng.uniform(2, 120))
            if rng.random() < 0.03:
                steps.append(("bounce", at, {"reason": "550 5.1.1 unknown user", "type": "bounce"}))
            else:
                steps.append(("delivered", at, {"ip": "168.1.1.1", "response": "250 OK"}))
                if rng.random() < 0.45:
                    at += timedelta(seconds=rng.uniform(300, 2 * 86400))
                    steps.append(("open", at, {"sg_machine_open": rng.random() < 0.1}))
                    if rng.random() < 0.35:
                        at += timedelta(seconds=rng.uniform(5, 3600))
                        url = (
                            f"{SITE}{path}?utm_source=newsletter&utm_medium=email"
                            f"&utm_campaign={utm}&utm_content=hero"
                        )
                        steps.append(("click", at, {"url": url, "url_offset": {"index": 0}}))
            for event, when, extra in steps:
                if within(when):
                    sendgrid.append(
                        (
                            when,
                            {
                                **common,
                                "timestamp": int(when.timestamp()),
                                "event": event,
                                "sg_event_id": _b64id(rng),
                                **extra,
                            },
                            p.person,
                        )
                    )

    # Twilio: status callbacks of SMS campaigns to people with a phone, and link clicks.
    twilio: Events = []
    for k, (name, path) in enumerate(SMS_CAMPAIGNS):
        sent = start + timedelta(seconds=span * (0.25 + 0.4 * k))
        for p in population:
            if p.phone is None or rng.random() > 0.6:
                continue
            sid = "SM" + _hex(rng, 32)
            base = {
                "AccountSid": ACCOUNT_SID,
                "From": SHOP_NUMBER,
                "To": p.phone,
                "MessageSid": sid,
                "SmsSid": sid,
                "ApiVersion": "2010-04-01",
            }
            at = sent + timedelta(seconds=rng.uniform(0, 600))
            statuses: list[tuple[str, datetime, dict[str, str]]] = [("sent", at, {})]
            at += timedelta(seconds=rng.uniform(1, 30))
            if rng.random() < 0.05:
                statuses.append(("undelivered", at, {"ErrorCode": "30003"}))
            else:
                statuses.append(("delivered", at, {"RawDlrDoneDate": at.strftime("%y%m%d%H%M")}))
            for status, when, extra in statuses:
                if within(when):
                    twilio.append(
                        (
                            when,
                            {
                                **base,
                                "MessageStatus": status,
                                "SmsStatus": status,
                                **extra,
                                "Timestamp": _ts(when).replace(".000Z", "Z"),
                            },
                            p.person,
                        )
                    )
            if statuses[-1][0] == "delivered" and rng.random() < 0.2:
                clicked = at + timedelta(seconds=rng.uniform(20, 6 * 3600))
                if within(clicked):
                    link = f"{SITE}{path}?utm_source=twilio&utm_medium=sms&utm_campaign={name}"
                    data = {
                        "message_sid": sid,
                        "account_sid": ACCOUNT_SID,
                        "messaging_service_sid": "MG" + "0" * 31 + "1",
                        "to": p.phone,
                        "from": SHOP_NUMBER,
                        "link": link,
                        "shortened_link": f"https://go.shop.example.com/{_hex(rng, 10)}",
                        "link_create_time": _ts(sent),
                        "click_time": _ts(clicked),
                        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
                    }
                    twilio.append(
                        (
                            clicked,
                            {
                                "specversion": "1.0",
                                "type": "com.twilio.daptbt.link-shortening.link-clicked",
                                "source": "AB" + "0" * 25 + "1",
                                "id": "NO" + _hex(rng, 32),
                                "dataschema": "https://events-schemas.twilio.com/DapTbt.LinkClicked/3",
                                "datacontenttype": "application/json",
                                "data": data,
                            },
                            p.person,
                        )
                    )

    # Shopify orders, store transactions, ad clicks and interactions, person by person.
    shopify: Events = []
    pos: Events = []
    ads: Events = []
    interactions: Events = []
    order_seq = 0
    txn_seq = 0

    def some_time() -> datetime:
        return start + timedelta(seconds=rng.uniform(0, span))

    def order(p: _Person, at: datetime, total: float, customer: bool = True) -> dict[str, Any]:
        nonlocal order_seq
        order_seq += 1
        if p.shopify_id is None and customer:  # marketplace orders have no shop customer
            p.shopify_id = 6_200_000_000_000 + p.n * 97
            truth.add("shopify_customer_id", str(p.shopify_id), p.person)
        body: dict[str, Any] = {
            "id": 5_800_000_000_000 + order_seq * 13,
            "admin_graphql_api_id": f"gid://shopify/Order/{5_800_000_000_000 + order_seq * 13}",
            "name": f"#{1000 + order_seq}",
            "order_number": 1000 + order_seq,
            "created_at": _local(at),
            "processed_at": _local(at),
            "currency": "USD",
            "financial_status": "paid",
            "subtotal_price": f"{total:.2f}",
            "total_discounts": "0.00",
            "total_price": f"{total:.2f}",
            "total_tax": "0.00",
            "test": False,
            "line_items": [
                {
                    "id": 866_550_311_766_000_000 + order_seq,
                    "title": "Trail Runner 2",
                    "quantity": 1,
                    "price": f"{total:.2f}",
                    "sku": "TR2-42",
                }
            ],
            "customer": None
            if not customer
            else {
                "id": p.shopify_id,
                "email": p.email,
                "phone": p.phone,
                "state": "enabled",
                "verified_email": True,
                "admin_graphql_api_id": f"gid://shopify/Customer/{p.shopify_id}",
            },
        }
        return body

    for p in population:
        # online orders
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            at = some_time()
            returning = p.shopify_id is not None
            o = order(p, at, round(rng.uniform(20, 300), 2))
            _channel, _campaign, query, referrer = _pick(rng)
            path = rng.choice(PAGES[:-1])
            typed = p.email
            # A checkout e-mail typed wrong: the order carries the customer id (and the
            # customer's phone, or the id is known from an earlier order) beside it.
            if (returning or p.phone is not None) and rng.random() < 0.08:
                typed = _typo(rng, p.email)
                ident["typos"] += 1
            truth.email(typed, p.person)
            o.update(
                {
                    "source_name": "web",
                    "app_id": 580111,
                    "email": typed,
                    "contact_email": typed,
                    "phone": p.phone if rng.random() < 0.5 else None,
                    "landing_site": f"{path}{query}",
                    "referring_site": referrer,
                    "location_id": None,
                    "browser_ip": f"203.0.113.{rng.randrange(1, 255)}",
                    "client_details": {"accept_language": "en-US", "user_agent": "Mozilla/5.0"},
                }
            )
            # One online order in five is collected in a store (BOPIS): a local-pickup
            # shipping line and the pickup location.
            if rng.random() < 0.2:
                location, code = rng.choice(STORES)
                o["location_id"] = location
                line = {"code": "Pickup in store", "title": f"Pickup at {code}", "price": "0.00"}
            else:
                line = {"code": "Standard", "title": "Standard Shipping", "price": "4.99"}
            o["shipping_lines"] = [
                {
                    "id": 271878346596 + len(shopify),
                    **line,
                    "source": "shopify",
                    "carrier_identifier": None,
                    "requested_fulfillment_service_id": None,
                    "delivery_category": None,
                }
            ]
            shopify.append((at, o, p.person))
        # store orders rung up on Shopify POS
        if (p.loyalty_id or p.phone) and rng.random() < 0.15:
            at = some_time()
            location = rng.choice(STORES)[0]
            o = order(p, at, round(rng.uniform(15, 180), 2))
            o.update(
                {
                    "source_name": "pos",
                    "app_id": 129785,
                    "email": None,
                    "contact_email": None,
                    "phone": None,
                    "landing_site": None,
                    "referring_site": None,
                    "location_id": location,
                    "user_id": 799407056,
                    "name": f"#{1000 + order_seq}-POS",
                }
            )
            shopify.append((at, o, p.person))
        # marketplace orders
        if rng.random() < 0.04:
            at = some_time()
            market, app_id = rng.choice(MARKETPLACES)
            o = order(p, at, round(rng.uniform(10, 90), 2), customer=False)
            o.update(
                {
                    "source_name": market,
                    "app_id": app_id,
                    "email": p.email,
                    "contact_email": p.email,
                    "phone": None,
                    "landing_site": None,
                    "referring_site": None,
                    "location_id": None,
                    "customer": None,
                }
            )
            shopify.append((at, o, p.person))
        # store transactions of the store system; a loyalty card is enrolled at the till
        # with the customer's e-mail, on the first transaction that carries it
        txns = sorted(
            some_time()
            for _ in range(rng.choice((0, 0, 0, 1, 2)) if (p.loyalty_id or p.phone) else 0)
        )
        for t, at in enumerate(txns):
            txn_seq += 1
            kind = rng.choices(("purchase", "return", "visit"), (0.8, 0.08, 0.12))[0]
            total = round(rng.uniform(8, 200), 2)
            enrol = t == 0 and p.loyalty_id is not None
            email = p.email if enrol or (kind == "purchase" and rng.random() < 0.3) else ""
            if email and not enrol and rng.random() < 0.25:
                email = _typo(rng, p.email)  # typed by the clerk, beside the loyalty card
                ident["typos"] += 1
            phone = _national(p.phone) if p.phone and rng.random() < 0.4 else ""
            if p.loyalty_id is None and not phone and p.phone:
                phone = _national(p.phone)  # no card: the till asks for the phone
            loyalty = p.loyalty_id or ""
            if not email and rng.random() < 0.04:
                email = JUNK_EMAIL  # the clerk's filler when the customer declines
                ident["junk_values"] += 1
            if not phone and rng.random() < 0.03:
                phone = JUNK_PHONE
                ident["junk_values"] += 1
            if not loyalty and rng.random() < 0.05:
                loyalty = "0"
                ident["junk_values"] += 1
            if p.loyalty_id:
                truth.add("loyalty_id", p.loyalty_id, p.person)
            if email and email != JUNK_EMAIL:
                truth.email(email, p.person)
            user_id = (p.user_id or "") if kind == "visit" else ""
            if user_id:
                truth.add("user_id", user_id, p.person)
            pos.append(
                (
                    at,
                    {
                        "transaction_id": f"{'V' if kind == 'visit' else 'T'}-{txn_seq:06d}",
                        "timestamp": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                        "store_id": rng.choice(STORES)[1],
                        "type": kind,
                        "total": ""
                        if kind == "visit"
                        else f"{-total if kind == 'return' else total:.2f}",
                        "currency": "" if kind == "visit" else "USD",
                        "loyalty_id": loyalty,
                        "user_id": user_id,
                        "email": email,
                        "phone": phone,
                        "register_id": "" if kind == "visit" else f"R{rng.randint(1, 4)}",
                        "items": "" if kind == "visit" else str(rng.randint(1, 5)),
                    },
                    p.person,
                )
            )
        # ad clicks
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            at = some_time()
            platform, param, campaign, keyword = rng.choice(AD_PLATFORMS)
            click_id = _b64id(rng)
            path = rng.choice(PAGES[:-1])
            landing = f"{SITE}{path}?{param or 'click_id'}={click_id}"
            if platform in ("criteo", "tiktok"):
                medium = "display" if platform == "criteo" else "paid_social"
                landing += f"&utm_source={platform}&utm_medium={medium}&utm_campaign={campaign}"
            hashed_email = p.email if rng.random() < 0.1 else ""
            anon = rng.choice(p.anon_ids) if p.anon_ids and rng.random() < 0.6 else ""
            if anon and rng.random() < 0.04:
                anon = "undefined"  # the site tag ran before the cookie was read
                ident["junk_values"] += 1
            ad_user = ""
            if rng.random() < 0.03:
                ad_user = "0"  # the user id a logged-out visitor's tag sends
                ident["junk_values"] += 1
            if hashed_email:
                truth.email(hashed_email, p.person)
            ads.append(
                (
                    at,
                    {
                        "click_id": click_id,
                        "click_time": _ts(at).replace(".000Z", "Z"),
                        "platform": platform,
                        "click_id_param": "",
                        "campaign": campaign,
                        "ad_group": path.strip("/").split("/")[0] or "home",
                        "keyword": keyword,
                        "ad_id": str(rng.randrange(10**9, 10**10)),
                        "creative": "",
                        "landing_page_url": landing,
                        "device": rng.choice(("MOBILE", "DESKTOP", "TABLET")),
                        "cost": f"{rng.uniform(0.1, 2.5):.2f}",
                        "currency": "USD",
                        "email": hashed_email,
                        "email_sha256": "",
                        "device_id": "",
                        "user_id": ad_user,
                        "anonymous_id": anon,
                    },
                    p.person,
                )
            )
        # chats and calls
        if rng.random() < 0.15:
            at = some_time()
            is_call = p.phone is not None and rng.random() < 0.5
            customer: dict[str, str] = {}
            if is_call and p.phone:
                customer["phone"] = _national(p.phone)
                if p.loyalty_id:
                    customer["loyalty_id"] = p.loyalty_id
                    truth.add("loyalty_id", p.loyalty_id, p.person)
            else:
                customer["email"] = p.email
                customer["anonymous_id"] = rng.choice(p.anon_ids)
                if p.user_id and rng.random() < 0.5:
                    customer["user_id"] = p.user_id
                elif rng.random() < 0.05:
                    customer["user_id"] = "null"  # the chat widget's logged-out user
                    ident["junk_values"] += 1
            duration = rng.randint(40, 1200)
            kind = "call" if is_call else "chat"
            interactions.append(
                (
                    at,
                    {
                        "interaction_id": f"{kind}-{p.n}-{int(at.timestamp())}",
                        "type": "call" if is_call else "chat",
                        "started_at": _ts(at).replace(".000Z", "Z"),
                        "ended_at": _ts(at + timedelta(seconds=duration)).replace(".000Z", "Z"),
                        "direction": "inbound",
                        "tool": "five9" if is_call else "zendesk",
                        "queue": rng.choice(("orders", "returns", "sales")),
                        "agent_id": f"a-{rng.randint(1, 30):02d}",
                        "outcome": rng.choice(("resolved", "order_placed", "escalated")),
                        "customer": customer,
                    },
                    p.person,
                )
            )

    share, ev = malformed_share, truth.events
    _write_jsonl(out, "sendgrid.jsonl", sendgrid, rng, share, stats, "timestamp", ev)
    _write_jsonl(out, "twilio.jsonl", twilio, rng, share, stats, "Timestamp", ev)
    _write_jsonl(out, "shopify.jsonl", shopify, rng, share, stats, "processed_at", ev)
    _write_jsonl(out, "interactions.jsonl", interactions, rng, share, stats, "started_at", ev)
    _write_csv(out, "pos.csv", POS_COLUMNS, pos, rng, share, stats, "timestamp", ev)
    _write_csv(out, "ads.csv", ADS_COLUMNS, ads, rng, share, stats, "click_time", ev)


def _store_signals(
    out: Path,
    population: list[_Person],
    start: datetime,
    end: datetime,
    seed: int,
    share: float,
    stats: GenStats,
    truth: _Truth,
) -> None:
    """``store_signals.csv``: QR-code scans in the retailer's app (the member's loyalty
    card and e-mail) and in-store Wi-Fi logins (the portal asks for the e-mail), from
    their own random stream so the other files stay as they were."""
    rng = random.Random(f"journeys-store-signals:{seed}")
    span = (end - start).total_seconds()
    rows: Events = []
    seq = 0
    for p in population:
        if rng.random() > 0.2:
            continue
        for _ in range(rng.randint(1, 3)):
            seq += 1
            at = start + timedelta(seconds=rng.uniform(0, span))
            store = rng.choice(STORES)[1]
            scan = p.loyalty_id is not None and rng.random() < 0.5
            row = {
                "signal_id": f"{'Q' if scan else 'W'}-{seq:06d}",
                "timestamp": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "store_id": store,
                "signal": "qr_scan" if scan else "wifi_login",
                "qr_code": rng.choice(("spring-sale", "shelf-denim", "sku-0042")) if scan else "",
                "access_point": "" if scan else f"{store}-ap{rng.randint(1, 4)}",
                "loyalty_id": p.loyalty_id if scan else "",
                "email": p.email,  # the app's member account, or the Wi-Fi portal's sign-in
            }
            if scan and p.loyalty_id:
                truth.add("loyalty_id", p.loyalty_id, p.person)
            truth.email(p.email, p.person)
            rows.append((at, row, p.person))
    columns = list(STORE_SIGNAL_COLUMNS)
    _write_csv(
        out, "store_signals.csv", columns, rows, rng, share, stats, "timestamp", truth.events
    )


def _source_event_id(source: str, record: dict[str, Any]) -> str:
    """The ``source_event_id`` the source's connector derives from *record*."""
    if source == "sendgrid":
        return str(record["sg_event_id"])
    if source == "twilio":
        if "data" in record:
            return str(record["id"])  # a Link Shortening click CloudEvent
        return f"{record['MessageSid']}:{record['MessageStatus']}"
    if source == "shopify":
        return str(record["id"])
    if source == "interactions":
        return str(record["interaction_id"])
    if source == "pos":
        return f"{record['store_id']}:{record['transaction_id']}"
    if source == "ads":
        return f"{record['platform']}:{record['click_id']}"
    if source == "store_signals":
        return f"{record['store_id']}:{record['signal_id']}"
    raise ValueError(f"no source_event_id rule for {source!r}")


def _bad_indices(rng: random.Random, count: int, share: float) -> set[int]:
    """Which records to spoil: a *share* of them, and at least one when share > 0."""
    if share <= 0 or count == 0:
        return set()
    bad = {i for i in range(count) if rng.random() < share}
    if not bad and count > 1:
        bad.add(rng.randrange(count))
    return bad


def _write_jsonl(
    out: Path,
    name: str,
    events: Events,
    rng: random.Random,
    share: float,
    stats: GenStats,
    time_field: str,
    events_truth: list[tuple[str, str, str]],
) -> None:
    events.sort(key=lambda e: e[0])
    bad = _bad_indices(rng, len(events), share)
    source = name.split(".", maxsplit=1)[0]
    with (out / name).open("w", encoding="utf-8") as fh:
        for i, (_at, record, owner) in enumerate(events):
            events_truth.append((source, _source_event_id(source, record), owner))
            line = json.dumps(record, separators=(",", ":"))
            if i in bad:
                if rng.random() < 0.5:
                    line = line[: rng.randrange(5, 40)]  # truncated JSON
                elif "data" in record:  # a Twilio CloudEvent keeps its time in data
                    line = json.dumps(
                        {**record, "data": {**record["data"], "click_time": "yesterday"}}
                    )
                else:
                    line = json.dumps({**record, time_field: "yesterday"})
            fh.write(line + "\n")
    stats.files[name] = len(events)
    stats.malformed_by_file[name] = len(bad)


def _write_csv(
    out: Path,
    name: str,
    columns: list[str],
    rows: Events,
    rng: random.Random,
    share: float,
    stats: GenStats,
    time_field: str,
    events_truth: list[tuple[str, str, str]],
) -> None:
    rows.sort(key=lambda e: e[0])
    bad = _bad_indices(rng, len(rows), share)
    source = name.split(".", maxsplit=1)[0]
    with (out / name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, (_at, row, owner) in enumerate(rows):
            events_truth.append((source, _source_event_id(source, row), owner))
            cells = [row.get(c, "") for c in columns]
            if i in bad:
                kind = rng.randrange(3)
                if kind == 0:
                    cells[columns.index(time_field)] = "2026-13-45T99:00:00Z"
                elif kind == 1:
                    cells[0] = ""  # the required transaction / click id
                else:
                    cells = cells[: len(columns) // 2]  # a cut-off row
            writer.writerow(cells)
    stats.files[name] = len(rows)
    stats.malformed_by_file[name] = len(bad)
