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

This module holds ``generate()`` and the simulated population; the model they share is
in ``generate_model``, the Segment writer in ``generate_segment``, the other sources in
``generate_channels`` and the bots in ``generate_bots``.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.generate_bots import ad_bots, crawlers
from connectors.generate_channels import _other_channels, _store_signals
from connectors.generate_model import ACQUISITION, PAGES, SITE, GenStats, _Device, _Person, _Truth
from connectors.generate_segment import _malformed, _SegmentWriter

#: Re-exported: ``generate_bots`` imports the site from here, the tests ``GenStats``.
__all__ = ["ACQUISITION", "PAGES", "SITE", "GenStats", "generate"]


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
