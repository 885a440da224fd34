"""``journeys generate``: synthetic multi-channel logs in the sources' own formats.

Deterministic for a given seed. Writes, into the output folder:

* ``segment.jsonl``: Segment Spec page/track/identify calls of web and app visitors,
  with UTM campaigns, click ids and referrers for every acquisition channel, logins that
  link anonymous ids to user ids, purchases (``Order Completed``) with revenue, and a
  small share of malformed lines (they must end as dead letters);
* ``sendgrid.jsonl``: SendGrid Event Webhook events (one per line) of campaign e-mails:
  processed, delivered, opens, and clicks on the campaign URL with its UTMs;
* ``twilio.jsonl``: Twilio status callbacks (form parameters as a JSON object, with a
  ``Timestamp``) of SMS campaigns, and Link Shortening click CloudEvents;
* ``shopify.jsonl``: ``orders/create`` bodies: online (``web``) orders with their landing
  page, POS orders with a ``location_id``, and a few marketplace orders;
* ``pos.csv``: store transactions (purchases, returns, loyalty visits);
* ``ads.csv``: ad clicks in the ad-click export layout;
* ``interactions.jsonl``: chats and calls;
* ``ground_truth.csv``: the true person of every identifier (``identifier_type,
  identifier_value,person``, with e-mails and phones hashed as the connectors hash
  them), for evaluating identity stitching;
* ``manifest.json``: what was written and how many records of each kind.

Every file has a share of malformed records (``malformed_share``, at least one per file
when it is above zero) that must end as dead letters. The Segment file uses the main
random stream and the other files a second one, so adding channels leaves
``segment.jsonl`` unchanged for a given seed.
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
    by_channel: dict[str, int] = field(default_factory=dict)
    #: records written per file name (CSV: data rows), and the malformed ones among them
    files: dict[str, int] = field(default_factory=dict)
    malformed_by_file: dict[str, int] = field(default_factory=dict)


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
    end = end or datetime(2026, 11, 1, tzinfo=UTC)
    start = end - timedelta(days=days)
    out.mkdir(parents=True, exist_ok=True)
    stats = GenStats(people=people)
    messages: list[tuple[datetime, dict[str, Any]]] = []
    truth: list[tuple[str, str, str]] = []
    ns = uuid.UUID(int=seed)
    population: list[_Person] = []
    for n in range(people):
        person = f"p{n:06d}"
        user_id = f"u{rng.randrange(10**8):08d}" if rng.random() < 0.6 else None
        email = f"customer{n}.{rng.randrange(1000)}@example.net"
        devices = [
            (str(uuid.uuid5(ns, f"{person}:anon:{d}")), d == 1)
            for d in range(rng.choice((1, 1, 2)))
        ]
        population.append(_Person(n, person, email, user_id, [d for d, _ in devices]))
        for anon, _ in devices:
            truth.append(("anonymous_id", anon, person))
        if user_id:
            truth.append(("user_id", user_id, person))
            truth.append(("email_sha256", hash_email(email), person))
        at = start + timedelta(seconds=rng.uniform(0, days * 86400 * 0.8))
        for _session in range(rng.randint(1, 5)):
            if at >= end:
                break
            anon, is_app = rng.choice(devices)
            channel, campaign, query, referrer = _pick(rng)
            stats.by_channel[channel] = stats.by_channel.get(channel, 0) + 1
            logged_in = user_id is not None and rng.random() < 0.5
            base: dict[str, Any] = {"anonymousId": anon}
            if logged_in:
                base["userId"] = user_id
            context: dict[str, Any] = {
                "library": {"name": "analytics.js", "version": "4.1.0"},
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile"
                if is_app or rng.random() < 0.5
                else "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0",
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
                messages.append(
                    (
                        at,
                        {
                            **base,
                            "type": "page",
                            "messageId": str(uuid.uuid5(ns, f"{person}:{at.timestamp()}:{i}")),
                            "timestamp": _ts(at),
                            "name": path,
                            "properties": {"path": path, "url": page["url"]},
                            "context": {**context, "page": page},
                        },
                    )
                )
                at += timedelta(seconds=rng.uniform(10, 300))
            if logged_in and rng.random() < 0.4:
                messages.append(
                    (
                        at,
                        {
                            **base,
                            "type": "identify",
                            "messageId": str(uuid.uuid5(ns, f"{person}:id:{at.timestamp()}")),
                            "timestamp": _ts(at),
                            "traits": {"email": email, "plan": "member"},
                            "context": context,
                        },
                    )
                )
            if rng.random() < 0.25:
                revenue = round(rng.uniform(15, 240), 2)
                order_id = f"o-{n}-{int(at.timestamp())}"
                messages.append(
                    (
                        at,
                        {
                            **base,
                            "type": "track",
                            "event": "Order Completed",
                            "messageId": str(uuid.uuid5(ns, f"{person}:order:{order_id}")),
                            "timestamp": _ts(at),
                            "properties": {
                                "order_id": order_id,
                                "revenue": revenue,
                                "currency": "USD",
                            },
                            "context": context,
                        },
                    )
                )
                stats.purchases += 1
            at += timedelta(hours=rng.uniform(2, 24 * 6))
    messages.sort(key=lambda m: m[0])
    with (out / "segment.jsonl").open("w", encoding="utf-8") as fh:
        for _at, msg in messages:
            if rng.random() < malformed_share:
                fh.write(_malformed(rng, msg) + "\n")
                stats.malformed += 1
            else:
                fh.write(json.dumps(msg, separators=(",", ":")) + "\n")
            stats.messages += 1
    stats.files["segment.jsonl"] = stats.messages
    stats.malformed_by_file["segment.jsonl"] = stats.malformed
    _other_channels(out, population, start, end, seed, malformed_share, stats, truth)
    with (out / "ground_truth.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["identifier_type", "identifier_value", "person"])
        writer.writerows(truth)
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
                "sessions_by_channel": stats.by_channel,
            },
            indent=2,
        )
        + "\n"
    )
    return stats


def _malformed(rng: random.Random, msg: dict[str, Any]) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return json.dumps(msg)[: rng.randrange(5, 40)]  # truncated JSON
    if kind == 1:
        return json.dumps({**msg, "timestamp": "yesterday"})  # bad timestamp
    bad = {k: v for k, v in msg.items() if k not in ("anonymousId", "userId")}
    return json.dumps(bad)  # no identifier at all


# ---- the other sources ---------------------------------------------------------------


@dataclass
class _Person:
    n: int
    person: str
    email: str
    user_id: str | None
    anon_ids: list[str]
    phone: str | None = None  # E.164
    loyalty_id: str | None = None
    shopify_id: int | None = None


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
POS_COLUMNS = [
    "transaction_id",
    "timestamp",
    "store_id",
    "type",
    "total",
    "currency",
    "loyalty_id",
    "user_id",
    "email",
    "phone",
    "register_id",
    "items",
]
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

Events = list[tuple[datetime, dict[str, Any]]]


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
    truth: list[tuple[str, str, str]],
) -> None:
    rng = random.Random(f"journeys-channels:{seed}")
    known = {(t, v) for t, v, _ in truth}

    def add_truth(type_: str, value: str, person: str) -> None:
        if (type_, value) not in known:
            known.add((type_, value))
            truth.append((type_, value, person))

    for p in population:
        add_truth("email_sha256", hash_email(p.email), p.person)
        if rng.random() < 0.7:
            area = rng.choice((212, 312, 415, 617, 646, 718))
            p.phone = f"+1{area}{200 + p.n // 10000 % 800}{p.n % 10000:04d}"
            add_truth("phone_sha256", hash_phone(p.phone), p.person)
        if rng.random() < 0.45:
            p.loyalty_id = f"LOY-{10000 + p.n * 7:06d}"
            add_truth("loyalty_id", p.loyalty_id, p.person)
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

    def order(p: _Person, at: datetime, total: float) -> dict[str, Any]:
        nonlocal order_seq
        order_seq += 1
        if p.shopify_id is None:
            p.shopify_id = 6_200_000_000_000 + p.n * 97
            add_truth("shopify_customer_id", str(p.shopify_id), p.person)
        return {
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
            "customer": {
                "id": p.shopify_id,
                "email": p.email,
                "phone": p.phone,
                "state": "enabled",
                "verified_email": True,
                "admin_graphql_api_id": f"gid://shopify/Customer/{p.shopify_id}",
            },
        }

    for p in population:
        # online orders
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            at = some_time()
            o = order(p, at, round(rng.uniform(20, 300), 2))
            _channel, _campaign, query, referrer = _pick(rng)
            path = rng.choice(PAGES[:-1])
            o.update(
                {
                    "source_name": "web",
                    "app_id": 580111,
                    "email": p.email,
                    "contact_email": p.email,
                    "phone": p.phone if rng.random() < 0.5 else None,
                    "landing_site": f"{path}{query}",
                    "referring_site": referrer,
                    "location_id": None,
                    "browser_ip": f"203.0.113.{rng.randrange(1, 255)}",
                    "client_details": {"accept_language": "en-US", "user_agent": "Mozilla/5.0"},
                }
            )
            shopify.append((at, o))
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
            shopify.append((at, o))
        # marketplace orders
        if rng.random() < 0.04:
            at = some_time()
            market, app_id = rng.choice(MARKETPLACES)
            o = order(p, at, round(rng.uniform(10, 90), 2))
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
            shopify.append((at, o))
        # store transactions of the store system
        for _ in range(rng.choice((0, 0, 0, 1, 2)) if (p.loyalty_id or p.phone) else 0):
            at = some_time()
            txn_seq += 1
            kind = rng.choices(("purchase", "return", "visit"), (0.8, 0.08, 0.12))[0]
            total = round(rng.uniform(8, 200), 2)
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
                        "loyalty_id": p.loyalty_id or "",
                        "user_id": (p.user_id or "") if kind == "visit" else "",
                        "email": p.email if kind == "purchase" and rng.random() < 0.3 else "",
                        "phone": _national(p.phone) if p.phone and rng.random() < 0.4 else "",
                        "register_id": "" if kind == "visit" else f"R{rng.randint(1, 4)}",
                        "items": "" if kind == "visit" else str(rng.randint(1, 5)),
                    },
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
                        "email": p.email if rng.random() < 0.1 else "",
                        "email_sha256": "",
                        "device_id": "",
                        "user_id": "",
                        "anonymous_id": rng.choice(p.anon_ids) if rng.random() < 0.6 else "",
                    },
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
            else:
                customer["email"] = p.email
                customer["anonymous_id"] = rng.choice(p.anon_ids)
                if p.user_id and rng.random() < 0.5:
                    customer["user_id"] = p.user_id
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
                )
            )

    _write_jsonl(out, "sendgrid.jsonl", sendgrid, rng, malformed_share, stats, "timestamp")
    _write_jsonl(out, "twilio.jsonl", twilio, rng, malformed_share, stats, "Timestamp")
    _write_jsonl(out, "shopify.jsonl", shopify, rng, malformed_share, stats, "processed_at")
    _write_jsonl(out, "interactions.jsonl", interactions, rng, malformed_share, stats, "started_at")
    _write_csv(out, "pos.csv", POS_COLUMNS, pos, rng, malformed_share, stats, "timestamp")
    _write_csv(out, "ads.csv", ADS_COLUMNS, ads, rng, malformed_share, stats, "click_time")


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
) -> None:
    events.sort(key=lambda e: e[0])
    bad = _bad_indices(rng, len(events), share)
    with (out / name).open("w", encoding="utf-8") as fh:
        for i, (_at, record) in enumerate(events):
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
) -> None:
    rows.sort(key=lambda e: e[0])
    bad = _bad_indices(rng, len(rows), share)
    with (out / name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, (_at, row) in enumerate(rows):
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
