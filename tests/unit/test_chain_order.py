"""The whole chain (identity router -> owner -> journey stage -> credits) gives the same
answers for the same events, whatever order they arrive in and however often.

A step-level property over seeded event sets: several identifiers per person, merges,
multi-channel touches and conversions, arriving up to two days late and redelivered.
Person ids depend on processing order, so answers are compared through each person's
set of identifiers (what `identities FINAL` groups), not through the id strings.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.model import Identifier, Touchpoint
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT
from tests.unit.test_agents import Pipeline

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
KINDS = [
    ("page_view", "organic_search", "segment"),
    ("page_view", "paid_search", "segment"),
    ("email_click", "email", "sendgrid"),
    ("sms_click", "sms", "twilio"),
    ("store_visit", "store", "pos"),
    ("order_completed", "direct", "segment"),
    ("store_purchase", "store", "pos"),
]


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


def _events(seed: int, persons: int, count: int) -> list[tuple[Touchpoint, int]]:
    """(touchpoint, arrival delay ms) for *count* events of *persons* customers, each with
    a device id, an anonymous id per session and sometimes a user id or e-mail hash."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        who = rnd.randrange(persons)
        event_type, channel, source = KINDS[rnd.randrange(len(KINDS))]
        at = T0 + timedelta(minutes=rnd.randrange(0, 20 * 24 * 60))
        ids = [Identifier("device_id", f"dev-{who}-{rnd.randrange(2)}")]
        if rnd.random() < 0.4:
            ids.append(Identifier("user_id", f"user-{who}"))
        if rnd.random() < 0.3:
            ids.append(Identifier("email_sha256", f"{who:064x}"))
        tp = Touchpoint(
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}-{i}")),
            source=source,
            source_event_id=f"{seed}-{i}",
            occurred_at=at,
            received_at=at,
            channel=channel,
            event_type=event_type,
            identifiers=tuple(ids),
            revenue=10.0 + i if "purchase" in event_type or "order" in event_type else None,
        )
        out.append((tp, rnd.randrange(0, 2 * 86_400_000)))
    return out


def _answers(p: Pipeline) -> dict[str, Any]:
    """What FINAL would show, with person ids replaced by their identifier sets."""
    t = p.topics
    groups: dict[str, set[str]] = defaultdict(set)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for change in p.on(t.identity_changes.name, "IdentityChange"):
        for ident in change["identifiers"]:
            key = ("identity", f"{ident['type']}:{ident['value']}")
            latest[key] = change
    for (_kind, ident), change in latest.items():
        if change["kind"] in ("MAP", "MERGE"):
            groups[p.graph.canonical(change["person_id"])].add(ident)

    def who(person: str) -> frozenset[str]:
        return frozenset(groups.get(p.graph.canonical(person), {person}))

    journeys: dict[str, dict[str, Any]] = {}
    for j in p.on(t.journeys.name, "Journey"):
        if j["journey_id"] not in journeys or j["version"] > journeys[j["journey_id"]]["version"]:
            journeys[j["journey_id"]] = j
    final_journeys = {
        jid: (who(j["person_id"]), j["converted"], tuple(j["path"]), tuple(j["touch_event_ids"]))
        for jid, j in journeys.items()
        if not j.get("retracted")
    }
    credits: dict[tuple[str, str], dict[str, Any]] = {}
    for c in p.on(t.attribution.name, "AttributionCredit"):
        key = (c["conversion_event_id"], c["model"])
        if key not in credits or c["version"] > credits[key]["version"]:
            credits[key] = {"version": c["version"], "rows": []}
        if c["version"] == credits[key]["version"]:
            credits[key]["rows"].append((c["channel"], c["touch_position"], round(c["credit"], 9)))
    final_credits = {
        key: sorted(v["rows"]) for key, v in credits.items() if key[1] not in ("markov", "shapley")
    }
    return {
        "persons": sorted(sorted(g) for g in groups.values()),
        "journeys": final_journeys,
        "credits": final_credits,
    }


def _run(serde: AvroSerde, events: list[Touchpoint]) -> dict[str, Any]:
    p = Pipeline(serde)
    for event in events:
        p.publish(event)
    return _answers(p)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), persons=st.integers(2, 6))
def test_the_chain_answers_do_not_depend_on_arrival_order_or_redelivery(
    serde: AvroSerde, seed: int, persons: int
) -> None:
    events = _events(seed, persons, 40)
    calm = [e for e, _ in sorted(events, key=lambda p: (p[0].occurred_at, p[0].event_id))]
    rnd = random.Random(seed)
    again = [(e, d + rnd.randrange(86_400_000)) for e, d in rnd.sample(events, len(events) // 4)]
    arrivals = sorted(events + again, key=lambda p: p[0].occurred_at + timedelta(milliseconds=p[1]))
    disturbed = [e for e, _ in arrivals]
    expected, got = _run(serde, calm), _run(serde, disturbed)
    assert got["persons"] == expected["persons"], "identities differ"
    assert got["journeys"] == expected["journeys"], "journeys differ"
    assert got["credits"] == expected["credits"], "credits differ"
