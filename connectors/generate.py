"""``journeys generate``: synthetic multi-channel logs in the sources' own formats.

Deterministic for a given seed. Writes, into the output folder:

* ``segment.jsonl``: Segment Spec page/track/identify calls of web and app visitors,
  with UTM campaigns, click ids and referrers for every acquisition channel, logins that
  link anonymous ids to user ids, purchases (``Order Completed``) with revenue, and a
  small share of malformed lines (they must end as dead letters);
* ``ground_truth.csv``: the true person of every identifier (``identifier_type,
  identifier_value,person``), for evaluating identity stitching;
* ``manifest.json``: what was written and how many records of each kind.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.pii import hash_email

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
    for n in range(people):
        person = f"p{n:06d}"
        user_id = f"u{rng.randrange(10**8):08d}" if rng.random() < 0.6 else None
        email = f"customer{n}.{rng.randrange(1000)}@example.net"
        devices = [
            (str(uuid.uuid5(ns, f"{person}:anon:{d}")), d == 1)
            for d in range(rng.choice((1, 1, 2)))
        ]
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
                "files": {"segment.jsonl": stats.messages},
                "malformed": stats.malformed,
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
