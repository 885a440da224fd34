"""The audiences step without Faust or a broker: one step and one dict table per
partition, and a tiny router that delivers each message to its partition in order."""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.agents import audience_step
from pipeline.agents.audiences import (
    FORWARD,
    TICK_CONTROL,
    AudienceStep,
    IdentityRelay,
    crc32_partitioner,
    partition_for,
    unquoted,
    watermark_key,
)
from pipeline.agents.journeys import JourneyStep, SnapshotCache
from pipeline.agents.messages import Out
from pipeline.core.model import Identifier, Touchpoint, to_millis
from pipeline.core.profiles import Signal
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import CONTROL_HEADER, Topics

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
P = 4


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


class Partitions:
    """P audience steps (one table each), fed in order through one queue."""

    def __init__(self, serde: AvroSerde) -> None:
        self.serde = serde
        self.topics = Topics.from_settings(Settings(topic_prefix="unit", partitions=P))
        self.tables: list[dict[str, Any]] = [{} for _ in range(P)]
        self.steps = [AudienceStep(serde, self.topics, t) for t in self.tables]
        self.relay = IdentityRelay(serde, self.topics)
        self.queue: deque[Out] = deque()
        self.sent: list[Out] = []

    def signal(self, person: str, eid: str, hours: float, kind: str, **kw: Any) -> None:
        s = Signal(eid, person, to_millis(T0) + int(hours * 3_600_000), kind, **kw)
        value = self.serde.encode("PersonSignal", s.to_record())
        key = person.encode()
        self.queue.append(Out(self.topics.person_signals.name, key, value, (), self._p(key)))
        self.drain()

    def identity(self, kind: str, person: str, absorbed: str | None = None) -> None:
        rec = {"kind": kind, "at": T0, "person_id": person, "absorbed_person_id": absorbed}
        value = self.serde.encode("IdentityChange", rec)
        # The batch engine's relay turns it into a control (MAP changes stop there).
        self.queue.extend(self.relay.process(value, self.topics.identity_changes.name, 0, 1))
        self.drain()

    def _p(self, key: bytes) -> int:
        return partition_for(key, P)

    def drain(self) -> None:
        offset = 0
        while self.queue:
            out = self.queue.popleft()
            offset += 1
            if out.topic not in (
                self.topics.person_signals.name,
                self.topics.identity_changes.name,
            ):
                self.sent.append(out)
                continue
            p = out.partition if out.partition is not None else self._p(out.key)
            control = dict(out.headers).get(CONTROL_HEADER)
            self.queue.extend(self.steps[p].process(out.value, out.topic, p, offset, control))
            self.queue.extend(self.steps[p].flush())

    def changes(self, person: str | None = None) -> list[tuple[str, str, str, str]]:
        recs = [
            self.serde.decode(o.value or b"", expect="AudienceChange")
            for o in self.sent
            if o.topic == self.topics.audiences.name
        ]
        return [
            (r["person_id"], r["segment"], r["change"], r["reason"])
            for r in recs
            if person is None or r["person_id"] == person
        ]

    def profiles(self, person: str) -> list[dict[str, Any]]:
        return [
            self.serde.decode(o.value or b"", expect="PersonProfile")
            for o in self.sent
            if o.topic == self.topics.profiles.name and o.key == person.encode()
        ]


def _two_people_on_different_partitions() -> tuple[str, str]:
    names = [f"person-{i}" for i in range(50)]
    app = names[0]
    web = next(n for n in names if partition_for(n.encode(), P) != partition_for(app.encode(), P))
    return app, web


def test_a_merge_hands_the_absorbed_profile_over_and_it_exits_its_segments(
    serde: AvroSerde,
) -> None:
    parts = Partitions(serde)
    app, web = _two_people_on_different_partitions()
    parts.signal(app, "a1", 0, "cart_add", platform="app", value=20.0, items=1)
    parts.signal(web, "w1", 2, "order", platform="web", value=20.0, order_id="o1")
    parts.signal(app, "a2", 40, "app_screen", platform="app")  # the app's clock passes 24 h
    assert (app, "abandoned_cart", "ENTERED", "time") in parts.changes(app)

    parts.identity("MERGE", web, absorbed=app)
    assert (app, "abandoned_cart", "EXITED", f"merged into {web}") in parts.changes(app)
    assert parts.profiles(app)[-1]["merged_into"] == web
    survivor = parts.profiles(web)[-1]
    assert survivor["app_user"] and survivor["orders"] == 1 and survivor["cart_items"] == 0
    assert "abandoned_cart" not in survivor["segments"]
    assert parts.tables[partition_for(app.encode(), P)][app][FORWARD] == web

    # A signal still routed to the absorbed person goes on to the survivor.
    parts.signal(app, "a3", 50, "email_click", platform="email")
    table = parts.tables[partition_for(web.encode(), P)]
    assert "a3" in json.dumps(table[web])


def test_the_relay_passes_merges_and_forgets_only(serde: AvroSerde) -> None:
    parts = Partitions(serde)
    name = parts.topics.identity_changes.name
    mapped = serde.encode("IdentityChange", {"kind": "MAP", "at": T0, "person_id": "p"})
    assert parts.relay.process(mapped, name, 0, 1) == []
    assert parts.relay.process(b"junk", name, 0, 2) == []


def test_forget_drops_the_profile(serde: AvroSerde) -> None:
    parts = Partitions(serde)
    parts.signal("p1", "e1", 0, "order", value=5.0, order_id="o")
    table = parts.tables[partition_for(b"p1", P)]
    assert "p1" in table
    parts.identity("FORGET", "p1")
    assert "p1" not in table


def test_a_tick_moves_an_idle_partition_and_the_left_cart_enters(serde: AvroSerde) -> None:
    parts = Partitions(serde)
    leaver, other = _two_people_on_different_partitions()
    parts.signal(leaver, "l1", 0, "cart_add", value=9.0, items=1)
    parts.signal(other, "o1", 30, "email_open", platform="email")
    assert parts.changes(leaver) == []  # pending: its partition's clock is 1 h behind it
    step = parts.steps[partition_for(leaver.encode(), P)]
    # The leaver's partition only knows its own newest signal; a tick brings the other's.
    step._watermarks[partition_for(other.encode(), P)] = to_millis(T0 + timedelta(hours=30))
    ticks = step.ticks(idle_s=0.0)
    assert [dict(t.headers)[CONTROL_HEADER] for t in ticks] == [TICK_CONTROL]
    parts.queue.extend(ticks)
    parts.drain()
    assert parts.changes(leaver) == [
        (leaver, "prospect", "ENTERED", "cart_add"),
        (leaver, "abandoned_cart", "ENTERED", "time"),
    ]


def test_an_unreadable_signal_is_a_dead_letter(serde: AvroSerde) -> None:
    parts = Partitions(serde)
    out = parts.steps[0].process(b"garbage", parts.topics.person_signals.name, 0, 7)
    assert [o.topic for o in out] == [parts.topics.dead_letters.name]
    rec = serde.decode(out[0].value or b"", expect="DeadLetter")
    assert rec["stage"] == "audiences" and rec["offset"] == 7


def test_the_journey_stage_emits_one_signal_per_profile_event(serde: AvroSerde) -> None:
    topics = Topics.from_settings(Settings(topic_prefix="unit"))
    step = JourneyStep(serde, topics, {}, SnapshotCache({}))

    def send(eid: str, event_type: str, **kw: Any) -> list[Out]:
        tp = Touchpoint(
            event_id=eid, source="segment", source_event_id=eid, occurred_at=T0,
            received_at=T0, channel="direct", event_type=event_type,
            identifiers=(Identifier("user_id", "u1"),), person_id="p1", **kw,
        )  # fmt: skip
        value = serde.encode("Touchpoint", tp.to_record())
        return [o for o in step.process(value, topics.person_touchpoints.name, 0, 1)]

    def signals(outs: list[Out]) -> list[dict[str, Any]]:
        return [
            serde.decode(o.value or b"", expect="PersonSignal")
            for o in outs
            if o.topic == topics.person_signals.name
        ]

    assert signals(send("e1", "page_view")) == []
    added = signals(send("e2", "product_added", properties={"price": "4", "quantity": "3"}))
    assert [(s["kind"], s["value"], s["items"], s["person_id"]) for s in added] == [
        ("cart_add", 12.0, 3, "p1")
    ]
    assert signals(send("e2", "product_added")) == []  # a redelivery: none again


def test_table_keys_land_on_the_partition_of_their_signals() -> None:
    for partitions in (1, 4, 8):
        for p in range(partitions):
            assert partition_for(watermark_key(p, partitions).encode(), partitions) == p
        for person in ("p-1", "person-42", "e3b0c442"):
            key = person.encode()
            assert crc32_partitioner(key, list(range(partitions)), []) == partition_for(
                key, partitions
            )
            # The Faust table serializes str keys as JSON: the same partition.
            quoted = json.dumps(person).encode()
            assert crc32_partitioner(quoted, list(range(partitions)), []) == partition_for(
                key, partitions
            )
        assert unquoted(json.dumps("née-1").encode()) == "née-1".encode()
        assert unquoted(b'"not json') == b'"not json'


def test_the_grace_holds_the_clock_back_until_a_late_merge_could_arrive(
    serde: AvroSerde, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(audience_step.time, "monotonic", lambda: now[0])
    parts = Partitions(serde)
    for step in parts.steps:
        step.grace_s = 5.0
    leaver = "person-0"
    parts.signal(leaver, "l1", 0, "cart_add", value=9.0, items=1)
    parts.signal(leaver, "l2", 30, "email_open", platform="email")
    assert parts.changes(leaver) == []  # 30 h of event time in no wall time: held back
    now[0] += 6.0
    step = parts.steps[partition_for(leaver.encode(), P)]
    parts.queue.extend(step.ticks(idle_s=5.0))
    parts.drain()
    assert [c[1:3] for c in parts.changes(leaver)] == [
        ("prospect", "ENTERED"),
        ("abandoned_cart", "ENTERED"),
    ]
