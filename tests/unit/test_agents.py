"""The worker's processing steps without Faust or a broker: plain dicts as tables and a
tiny in-memory router that delivers each message to the step of its topic, in order."""

from __future__ import annotations

import json
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.agents.identity import IdentityOwner, IdentityRouter
from pipeline.agents.journeys import FORWARD_KEY, JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.core.attribution import AttributionError
from pipeline.core.identity import IdentityGraph
from pipeline.core.model import Identifier, Touchpoint
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import CONTROL_HEADER, FORGET_CONTROL, Topics

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


class Pipeline:
    """Router -> owner -> journey stage, with one queue per topic (one partition each)."""

    def __init__(self, serde: AvroSerde) -> None:
        self.serde = serde
        self.topics = Topics.from_settings(Settings(topic_prefix="unit"))
        self.graph = IdentityGraph()
        self.router = IdentityRouter(serde, self.topics, self.graph)
        self.owner = IdentityOwner(serde, self.topics, self.graph)
        self.states: dict[str, Any] = {}
        self.journeys = JourneyStep(serde, self.topics, self.states, SnapshotCache({}))
        self.sent: list[Out] = []
        self.queue: deque[Out] = deque()
        #: Messages one drain may deliver (more means they bounce between steps).
        self.max_steps = 10_000

    def publish(self, tp: Touchpoint) -> None:
        value = self.serde.encode("Touchpoint", tp.to_record())
        self.queue.append(Out(self.topics.touchpoints.name, b"k", value))
        self.drain()

    def control(self, topic: str, value: bytes, kind: bytes) -> None:
        self.queue.append(Out(topic, b"owner", value, ((CONTROL_HEADER, kind),)))
        self.drain()

    def drain(self) -> None:
        t = self.topics
        steps = 0
        while self.queue:
            steps += 1
            assert steps <= self.max_steps, "messages keep bouncing between the steps"
            msg = self.queue.popleft()
            self.sent.append(msg)
            headers = dict(msg.headers)
            if msg.topic == t.touchpoints.name:
                assert msg.value is not None
                out = self.router.process(msg.value, msg.topic, 0, 0)
            elif msg.topic == t.identity_links.name:
                assert msg.value is not None
                out = self.owner.process(
                    msg.value,
                    msg.topic,
                    0,
                    0,
                    headers.get(UPSTREAM_HEADER),
                    headers.get(CONTROL_HEADER),
                )
            elif msg.topic == t.person_touchpoints.name:
                assert msg.value is not None
                out = self.journeys.process(
                    msg.value,
                    msg.topic,
                    0,
                    0,
                    headers.get(UPSTREAM_HEADER),
                    headers.get(CONTROL_HEADER),
                )
            else:
                continue
            self.queue.extend(out)

    def on(self, topic: str, schema: str) -> list[dict[str, Any]]:
        return [
            self.serde.decode(m.value, expect=schema)
            for m in self.sent
            if m.topic == topic and m.value is not None and not m.headers
        ]

    def routed(self) -> list[dict[str, Any]]:
        t = self.topics.person_touchpoints.name
        return [
            self.serde.decode(m.value, expect="Touchpoint")
            for m in self.sent
            if m.topic == t and m.value is not None and CONTROL_HEADER not in dict(m.headers)
        ]


def tp(n: str, at: datetime, event_type: str, channel: str, *ids: tuple[str, str]) -> Touchpoint:
    return Touchpoint(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, n)),
        source="pos" if event_type == "store_purchase" else "segment",
        source_event_id=n,
        occurred_at=at,
        received_at=at,
        channel=channel,
        event_type=event_type,
        identifiers=tuple(Identifier(t, v) for t, v in ids),
        revenue=50.0 if event_type == "store_purchase" else None,
    )


def test_known_identifiers_take_the_fast_path_and_new_ones_the_owner(serde: AvroSerde) -> None:
    p = Pipeline(serde)
    p.publish(tp("a", T0, "page_view", "direct", ("anonymous_id", "anon-1")))
    p.publish(tp("b", T0 + timedelta(minutes=5), "page_view", "direct", ("anonymous_id", "anon-1")))
    assert (p.router.misses, p.router.hits) == (1, 1)
    routed = p.routed()
    assert len(routed) == 2 and routed[0]["person_id"] == routed[1]["person_id"]
    upstreams = [
        dict(m.headers)[UPSTREAM_HEADER]
        for m in p.sent
        if m.topic == p.topics.person_touchpoints.name
    ]
    # each route is an upstream of its own for the journey stage's watermark
    assert upstreams == [b"owner/unit.touchpoints[0]", b"unit.touchpoints[0]"]


def test_a_merge_hands_the_absorbed_state_to_the_survivor_and_reattributes(
    serde: AvroSerde,
) -> None:
    p = Pipeline(serde)
    p.publish(tp("click", T0, "email_click", "email", ("email_sha256", "e" * 64)))
    p.publish(tp("buy", T0 + timedelta(days=1), "store_purchase", "store", ("loyalty_id", "L1")))
    # a later event moves the watermark past the purchase: it converts alone
    p.publish(tp("x", T0 + timedelta(days=2), "page_view", "direct", ("anonymous_id", "a-x")))
    first = p.on(p.topics.journeys.name, "Journey")
    assert [(j["path"], j["version"]) for j in first if j["converted"]] == [(["store"], 1)]
    loyalty_person = first[0]["person_id"]

    link = ("loyalty_id", "L1"), ("email_sha256", "e" * 64)
    p.publish(tp("login", T0 + timedelta(days=2, hours=1), "identify", "direct", *link))
    merges = p.on(p.topics.identity_changes.name, "IdentityChange")
    merge = [c for c in merges if c["kind"] == "MERGE"]
    assert len(merge) == 1 and merge[0]["absorbed_person_id"] == loyalty_person
    survivor = merge[0]["person_id"]
    assert p.states[FORWARD_KEY.format(person=loyalty_person)][0] == survivor
    assert loyalty_person not in p.states

    again = [j for j in p.on(p.topics.journeys.name, "Journey") if j["converted"]]
    assert [(j["path"], j["version"], j["person_id"]) for j in again[1:]] == [
        (["email", "store"], 2, survivor)
    ]
    credits = [
        c
        for c in p.on(p.topics.attribution.name, "AttributionCredit")
        if c["version"] == 2 and c["model"] == "linear"
    ]
    assert sorted((c["channel"], c["credit"]) for c in credits) == [("email", 0.5), ("store", 0.5)]

    # an event still addressed to the absorbed person is forwarded to the survivor
    late = tp("late", T0 + timedelta(days=2, hours=2), "page_view", "direct")
    late_rec = {**late.to_record(), "person_id": loyalty_person}
    p.queue.append(
        Out(p.topics.person_touchpoints.name, b"x", serde.encode("Touchpoint", late_rec))
    )
    p.drain()
    assert p.routed()[-1]["person_id"] == survivor


def test_forget_erases_the_person_from_graph_and_journey_state(serde: AvroSerde) -> None:
    p = Pipeline(serde)
    ids = ("user_id", "u-9"), ("email_sha256", "f" * 64)
    p.publish(tp("v", T0, "page_view", "direct", *ids))
    person = p.routed()[0]["person_id"]
    assert person in p.states
    request = {"identifier": {"type": "email_sha256", "value": "f" * 64}}
    p.control(p.topics.identity_links.name, json.dumps(request).encode(), FORGET_CONTROL)
    forget = [c for c in p.on(p.topics.identity_changes.name, "IdentityChange")][-1]
    assert forget["kind"] == "FORGET" and forget["person_id"] == person
    assert sorted(i["value"] for i in forget["identifiers"]) == sorted(v for _t, v in ids)
    tombstones = [
        m for m in p.sent if m.topic == p.topics.identity_changes.name and m.value is None
    ]
    assert [m.key for m in tombstones] == [person.encode()]
    assert person not in p.states
    assert p.graph.person_of(Identifier("user_id", "u-9")) is None
    # an unknown identifier, or garbage, changes nothing and raises nothing
    p.control(p.topics.identity_links.name, b'{"person_id": "nobody"}', FORGET_CONTROL)
    p.control(p.topics.identity_links.name, b"not json", FORGET_CONTROL)
    assert [m for m in p.sent if m.value is None] == tombstones


def test_idle_persons_still_expire_after_a_restart(serde: AvroSerde) -> None:
    p = Pipeline(serde)
    p.publish(tp("v1", T0, "page_view", "organic_search", ("anonymous_id", "idle")))
    p.publish(tp("v2", T0 + timedelta(hours=2), "page_view", "direct", ("anonymous_id", "o")))
    assert not [j for j in p.on(p.topics.journeys.name, "Journey")]
    # a new process: same tables, empty memory
    p.journeys = JourneyStep(serde, p.topics, p.states, SnapshotCache({}))
    p.publish(tp("v3", T0 + timedelta(days=45), "page_view", "direct", ("anonymous_id", "o2")))
    nulls = [j for j in p.on(p.topics.journeys.name, "Journey") if not j["converted"]]
    assert sorted(j["path"] for j in nulls) == [["direct"], ["organic_search"]]


def test_a_merge_that_reverses_an_older_one_does_not_bounce_for_ever(serde: AvroSerde) -> None:
    """The owner re-derives a component after a late event: B was absorbed into A, now
    A is absorbed into B. Without dropping A's stale forward, a touchpoint of either
    person went back and forth between them for ever (seen in `make bench`)."""
    p = Pipeline(serde)
    p.max_steps = 200
    pt = p.topics.person_touchpoints.name

    def merge(survivor: str, absorbed: str) -> bytes:
        return serde.encode(
            "IdentityChange",
            {
                "kind": "MERGE",
                "at": T0,
                "person_id": survivor,
                "absorbed_person_id": absorbed,
                "identifiers": [],
                "rule": None,
                "event_id": None,
            },
        )

    def touch(n: str, person: str, minutes: int) -> None:
        rec = tp(n, T0 + timedelta(minutes=minutes), "page_view", "direct", ("user_id", n))
        record = {**rec.to_record(), "person_id": person}
        p.queue.append(Out(pt, person.encode(), serde.encode("Touchpoint", record)))
        p.drain()

    touch("a1", "p-A", 0)
    touch("b1", "p-B", 1)
    p.control(pt, merge("p-A", "p-B"), b"merge")  # B into A
    p.control(pt, merge("p-B", "p-A"), b"merge")  # re-derived: A into B
    touch("a2", "p-A", 2)
    touch("b2", "p-B", 3)
    assert FORWARD_KEY.format(person="p-A") in p.states  # A is absorbed now
    assert FORWARD_KEY.format(person="p-B") not in p.states  # B is live again
    assert p.states.get("p-B") is not None  # and holds the journey of both


def test_a_corrupt_journey_state_is_a_dead_letter_and_the_person_starts_afresh(
    serde: AvroSerde,
) -> None:
    p = Pipeline(serde)
    p.publish(tp("v1", T0, "page_view", "email", ("anonymous_id", "poison")))
    person = p.routed()[0]["person_id"]
    p.states[person] = {"format": 2, "person_id": person, "events": "garbage"}
    p.publish(
        tp("buy", T0 + timedelta(minutes=5), "store_purchase", "store", ("anonymous_id", "poison"))
    )
    dead = p.on(p.topics.dead_letters.name, "DeadLetter")
    assert len(dead) == 1 and f"journey state of {person} dropped" in dead[0]["error"]
    assert b"garbage" in dead[0]["payload"]
    [journey] = [j for j in p.on(p.topics.journeys.name, "Journey") if j["converted"]]
    assert journey["path"] == ["store"]  # the event after the poison is processed


def test_a_corrupt_model_snapshot_is_refused_where_it_enters() -> None:
    cache = SnapshotCache({})
    record = {"model": "markov", "version": "m-1", "computed_at": T0, "snapshot_json": "{}"}
    with pytest.raises((AttributionError, KeyError, ValueError)):
        cache.offer(record)
    assert cache.get("markov") == ("bootstrap", None)  # credits go on with linear


def test_a_late_conversion_retracts_a_null_path_downstream(serde: AvroSerde) -> None:
    p = Pipeline(serde)
    device = ("device_id", "d-late")
    p.publish(tp("click", T0, "email_click", "email", device))
    p.publish(tp("later", T0 + timedelta(days=35), "page_view", "direct", device))
    [null] = p.on(p.topics.journeys.name, "Journey")
    assert not null["converted"] and null["path"] == ["email"]
    p.publish(tp("buy", T0 + timedelta(days=6), "store_purchase", "store", device))
    journeys = p.on(p.topics.journeys.name, "Journey")
    [gone] = [j for j in journeys if j["journey_id"] == null["journey_id"] and j["version"] == 2]
    assert gone["retracted"] and gone["path"] == []
    [converted] = [j for j in journeys if j["converted"]]
    assert converted["path"] == ["email", "store"]
    paths = [c for c in p.on(p.topics.closed_paths.name, "ClosedPath")]
    assert [(c["path"], c["version"]) for c in paths if c["journey_id"] == null["journey_id"]] == [
        (["email"], 1),
        ([], 2),
    ]


def test_the_model_learner_takes_a_retracted_path_out(serde: AvroSerde) -> None:
    topics = Topics.from_settings(Settings(topic_prefix="unit"))
    counts: dict[str, Any] = {}
    learner = ModelLearner(serde, topics, counts, {}, SnapshotCache({}), refit_every=1000)

    def path(version: int, channels: list[str], converted: bool = False) -> bytes:
        rec = {"journey_id": "j", "path": channels, "converted": converted, "revenue": 0.0}
        return serde.encode("ClosedPath", {**rec, "version": version})

    learner.add(path(1, ["email"]))
    assert counts == {"email": [0.0, 0.0, 1.0]}
    learner.add(path(3, []))
    learner.add(path(2, ["email", "sms"]))  # older than the retraction: ignored
    assert counts == {}


def test_a_reversed_merge_whose_controls_cross_partitions_keeps_one_live_person(
    serde: AvroSerde,
) -> None:
    """The simulation's seed 0 (lateness 27): A into B (identity version 17), then the
    owner re-derives B into A (version 18). Each side processes its own merge control
    before the other's hand-over arrives; the newer merge must win on both sides, or
    the two persons each stay live with half of the events."""
    p = Pipeline(serde)
    pt = p.topics.person_touchpoints.name

    def change(survivor: str, absorbed: str, version: int) -> bytes:
        return serde.encode(
            "IdentityChange",
            {
                "kind": "MERGE",
                "at": T0,
                "person_id": survivor,
                "absorbed_person_id": absorbed,
                "identifiers": [],
                "rule": None,
                "event_id": None,
                "version": version,
            },
        )

    def touch(n: str, person: str, minutes: int, event_type: str = "page_view") -> None:
        rec = tp(n, T0 + timedelta(minutes=minutes), event_type, "email", ("user_id", n))
        record = {**rec.to_record(), "person_id": person}
        p.queue.append(Out(pt, person.encode(), serde.encode("Touchpoint", record)))
        p.drain()

    touch("a1", "p-A", 0)
    touch("b1", "p-B", 1)
    # Both merge controls are processed before either hand-over (crossing partitions).
    control = ((CONTROL_HEADER, b"merge"),)
    outs = p.journeys.process(change("p-B", "p-A", 17), pt, 0, 0, None, b"merge")
    outs += p.journeys.process(change("p-A", "p-B", 18), pt, 1, 0, None, b"merge")
    assert all(o.headers != control for o in outs)  # hand-overs, not merges
    p.queue.extend(outs)
    p.drain()
    assert FORWARD_KEY.format(person="p-B") in p.states  # B absorbed (the newer merge)
    assert FORWARD_KEY.format(person="p-A") not in p.states  # A live again
    assert p.states.get("p-B") is None
    events = [e[1] for e in p.states["p-A"]["events"]]
    assert len(events) == 2  # both persons' events in the one live person
    touch("buy", "p-B", 5, "store_purchase")  # still addressed to B: forwarded to A
    [journey] = [j for j in p.on(p.topics.journeys.name, "Journey") if j["converted"]]
    assert journey["person_id"] == "p-A"
    assert len(p.states["p-A"]["events"]) == 3
