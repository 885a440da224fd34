"""The model `journeys generate` builds its files from, shared by all its modules: the
shop's site, acquisition channels and stores, the run's counters (``GenStats``), the
ground truth being recorded (``_Truth``), the simulated people and their devices, and
the small helpers several writers use (channel pick, timestamps, e-mail typos, junk
values). It imports no other part of the generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
#: (Shopify location id, POS store code)
STORES = ((905684977, "NYC-05"), (905684978, "BOS-01"), (905684979, "SFO-02"))


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
