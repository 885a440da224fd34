"""The other sources of `journeys generate`, from the same simulated people: SendGrid
e-mail events, Twilio SMS callbacks and link clicks, Shopify orders (online, POS and
marketplace), store transactions, ad clicks, chats and calls (``_other_channels``) and
store signals (``_store_signals``), each file in its source's own format with a share of
malformed records, and the ``source_event_id`` and true owner of every record appended
to the events truth.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from connectors.generate_model import (
    JUNK_EMAIL,
    JUNK_PHONE,
    PAGES,
    SITE,
    STORES,
    GenStats,
    _Person,
    _pick,
    _Truth,
    _ts,
    _typo,
)
from connectors.pos import COLUMNS as POS_CSV_COLUMNS
from connectors.store_signals import COLUMNS as STORE_SIGNAL_COLUMNS

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
