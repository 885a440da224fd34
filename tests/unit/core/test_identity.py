"""Identity stitching: hand-made journeys and Hypothesis properties of the graph."""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.identity import (
    ChangeKind,
    IdentityChange,
    IdentityError,
    IdentityGraph,
    IdentityRules,
    Resolution,
    pairwise_precision_recall,
    person_id_for,
)
from pipeline.core.model import Identifier
from pipeline.core.pii import hash_email, sha256_hex

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"

Event = tuple[tuple[Identifier, ...], str, int]


def ids(*pairs: str) -> tuple[Identifier, ...]:
    """``ids("user_id:u1", "device_id:d1")``."""
    out = []
    for pair in pairs:
        type_, _, value = pair.partition(":")
        out.append(Identifier(type_, value))
    return tuple(out)


def run(graph: IdentityGraph, events: Sequence[Event]) -> list[Resolution]:
    return [graph.resolve(identifiers, event_id, at) for identifiers, event_id, at in events]


def persons_of(graph: IdentityGraph) -> set[frozenset[str]]:
    """The partition of known identifiers into persons (ids left out)."""
    by_person: dict[str, set[str]] = {}
    for key, pid in graph.partition().items():
        by_person.setdefault(pid, set()).add(key)
    return {frozenset(keys) for keys in by_person.values()}


def state_of(graph: IdentityGraph) -> tuple[dict[str, str], dict[str, Any]]:
    """Identifier -> person id, and each person's first identifier, creation,
    identifiers and newest link: everything but the history (absorbed ids, forwards)."""
    persons = {
        pid: (rec["n"], rec["f"], rec["ids"], rec["last"])
        for pid, rec in graph.stores.persons.items()
    }
    return dict(graph.stores.ident_to_person), persons


def kinds(changes: Sequence[IdentityChange], kind: ChangeKind) -> list[IdentityChange]:
    return [c for c in changes if c.kind is kind]


def assert_limits(graph: IdentityGraph) -> None:
    """No person breaks a limit or a cap."""
    for rec in graph.stores.persons.values():
        for type_, values in rec["ids"].items():
            assert len(values) <= graph.rules.bound(type_), (type_, values)
        assert sum(map(len, rec["ids"].values())) <= graph.rules.max_person_identifiers


# --------------------------------------------------------------------------- hand-made


def test_web_visitor_app_login_email_click_and_store_loyalty_are_one_person() -> None:
    email = hash_email("Jane.Doe@Shop.example ")
    events: list[Event] = [
        (ids("anonymous_id:web-1"), "page", 1_000),
        (ids("anonymous_id:web-1", "user_id:cust-42"), "web-login", 2_000),
        (ids("device_id:ios-1", "user_id:cust-42"), "app-login", 3_000),
        (ids("user_id:cust-42", f"email_sha256:{email}"), "identify", 3_500),
        (ids(f"email_sha256:{email}"), "email-click", 4_000),
        (ids("loyalty_id:L-9", f"email_sha256:{email}"), "store-purchase", 5_000),
    ]
    graph = IdentityGraph()
    results = run(graph, events)
    person = person_id_for("anonymous_id:web-1")  # the first identifier names the person
    assert {r.person_id for r in results} == {person}
    assert graph.members(person) == {
        "user_id": ["cust-42"],
        "email_sha256": [email],
        "loyalty_id": ["L-9"],
        "device_id": ["ios-1"],
        "anonymous_id": ["web-1"],
    }
    assert all(c.kind is ChangeKind.MAP for r in results for c in r.changes)
    assert results[1].changes[0].rule == "deterministic:user_id"
    # Any arrival order gives the same person and id.
    for perm in itertools.islice(itertools.permutations(events), 0, None, 37):
        other = IdentityGraph()
        run(other, perm)
        assert state_of(other) == state_of(graph)


def test_kiosk_used_by_three_customers_keeps_three_persons_and_audits_refusals() -> None:
    graph = IdentityGraph()
    results = run(
        graph,
        [
            (ids("device_id:kiosk-7", "user_id:u1"), "k1", 1_000),
            (ids("device_id:kiosk-7", "user_id:u2"), "k2", 2_000),
            (ids("device_id:kiosk-7", "user_id:u3"), "k3", 3_000),
        ],
    )
    assert persons_of(graph) == {
        frozenset({"user_id:u1", "device_id:kiosk-7"}),
        frozenset({"user_id:u2"}),
        frozenset({"user_id:u3"}),
    }
    p1 = person_id_for("user_id:u1")
    for result, user in zip(results[1:], ("u2", "u3"), strict=True):
        (refused,) = kinds(result.changes, ChangeKind.REFUSED)
        assert refused.rule == "limit:user_id"
        assert refused.person_id == person_id_for(f"user_id:{user}") == result.person_id
        assert refused.absorbed_person_id == p1
        assert refused.identifiers == ids("device_id:kiosk-7")
        assert refused.event_id == result.changes[-1].event_id

    # A fourth customer makes the kiosk a super node: it is cut out of every person.
    fourth = graph.resolve(ids("device_id:kiosk-7", "user_id:u4"), "k4", 4_000)
    (refused,) = kinds(fourth.changes, ChangeKind.REFUSED)
    assert refused.rule == "super_node:device_id"
    kiosk = person_id_for("device_id:kiosk-7")
    assert refused.absorbed_person_id == kiosk
    moved = [c for c in fourth.changes if c.kind is ChangeKind.MAP and c.person_id == kiosk]
    assert moved
    assert moved[0].rule == "super_node:device_id"
    assert persons_of(graph) == {
        frozenset({"user_id:u1"}),
        frozenset({"user_id:u2"}),
        frozenset({"user_id:u3"}),
        frozenset({"user_id:u4"}),
        frozenset({"device_id:kiosk-7"}),
    }
    assert graph.resolve(ids("device_id:kiosk-7"), "k5", 5_000).person_id == kiosk
    later = graph.resolve(ids("device_id:kiosk-7", "user_id:u5"), "k6", 6_000)
    assert later.person_id == person_id_for("user_id:u5")
    assert [c.rule for c in later.changes] == ["deterministic:user_id", "super_node:device_id"]
    # An identifier set already resolved is audited once, by its first event.
    assert graph.resolve(ids("device_id:kiosk-7", "user_id:u1"), "k7", 7_000).changes == []


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_refused_kiosk_link_is_audited_whatever_the_arrival_order(
    order: tuple[int, ...],
) -> None:
    events = [
        (ids("device_id:kiosk-7", "user_id:u1"), "k1", 1_000),
        (ids("device_id:kiosk-7", "user_id:u2"), "k2", 2_000),
        (ids("device_id:kiosk-7", "user_id:u3"), "k3", 3_000),
    ]
    graph = IdentityGraph()
    changes = [c for r in run(graph, [events[i] for i in order]) for c in r.changes]
    refused = {c.event_id for c in kinds(changes, ChangeKind.REFUSED)}
    # In event-time order the kiosk stays with u1, so k2 and k3 are the refused links.
    assert {"k2", "k3"} <= refused
    assert {c.rule for c in kinds(changes, ChangeKind.REFUSED)} == {"limit:user_id"}


def test_two_user_ids_never_merge() -> None:
    graph = IdentityGraph()
    first = graph.resolve(ids("user_id:u1", "anonymous_id:a1"), "e1", 1_000)
    second = graph.resolve(ids("user_id:u2", "anonymous_id:a1"), "e2", 2_000)
    assert first.person_id == person_id_for("user_id:u1")
    assert second.person_id == person_id_for("user_id:u2")
    (refused,) = kinds(second.changes, ChangeKind.REFUSED)
    assert refused.rule == "limit:user_id"
    assert refused.absorbed_person_id == first.person_id
    assert graph.members(first.person_id) == {"user_id": ["u1"], "anonymous_id": ["a1"]}
    # Both user ids in one event: the lower value anchors, the other is refused.
    both = graph.resolve(ids("user_id:u9", "user_id:u8", "email_sha256:e8"), "e3", 3_000)
    assert both.person_id == person_id_for("user_id:u8")
    assert graph.members(both.person_id) == {"user_id": ["u8"], "email_sha256": ["e8"]}
    assert [c.rule for c in kinds(both.changes, ChangeKind.REFUSED)] == ["limit:user_id"]
    assert_limits(graph)


def test_blocklisted_values_never_link_and_are_audited_once_per_event() -> None:
    graph = IdentityGraph()
    junk_email = sha256_hex("")
    results = run(
        graph,
        [
            (ids("user_id:null", "anonymous_id:a1"), "b1", 1_000),
            (ids("user_id:NULL ", "anonymous_id:a2", "device_id:undefined"), "b2", 2_000),
            (ids(f"email_sha256:{junk_email}", "anonymous_id:a3"), "b3", 3_000),
            (ids(f"email_sha256:{hash_email('test@example.com')}", "anonymous_id:a1"), "b4", 4),
        ],
    )
    assert persons_of(graph) == {
        frozenset({"anonymous_id:a1"}),
        frozenset({"anonymous_id:a2"}),
        frozenset({"anonymous_id:a3"}),
    }
    for result in results:
        (refused,) = kinds(result.changes, ChangeKind.REFUSED)
        assert refused.rule == "blocklist"
        assert refused.person_id == result.person_id
    assert set(results[1].changes[0].identifiers) == set(
        ids("user_id:NULL ", "device_id:undefined")
    )
    # Only junk: an ephemeral person of the event, stored nowhere; again: nothing new.
    alone = graph.resolve(ids("user_id:undefined", "device_id:0"), "b5", 5_000)
    assert [c.rule for c in alone.changes] == ["blocklist"]
    assert graph.members(alone.person_id) == {}
    again = graph.resolve(ids("user_id:undefined", "device_id:0"), "b5", 5_000)
    assert again == Resolution(alone.person_id, [])
    assert graph.lookup(ids("user_id:null")) is None


def test_merge_keeps_the_older_person_and_forwards_the_absorbed_one() -> None:
    events: list[Event] = [
        (ids("user_id:u1"), "x1", 5_000),
        (ids("email_sha256:e1"), "x2", 7_000),
        (ids("user_id:u1", "email_sha256:e1"), "x3", 8_000),
        (ids("anonymous_id:a1"), "x4", 1_000),
        (ids("anonymous_id:a1", "user_id:u1"), "x5", 9_000),
    ]
    graph = IdentityGraph()
    results = run(graph, events)
    p_user = person_id_for("user_id:u1")
    p_email = person_id_for("email_sha256:e1")
    p_anon = person_id_for("anonymous_id:a1")
    (merge,) = kinds(results[2].changes, ChangeKind.MERGE)
    assert (merge.person_id, merge.absorbed_person_id) == (p_user, p_email)
    (merge,) = kinds(results[4].changes, ChangeKind.MERGE)
    assert (merge.person_id, merge.absorbed_person_id) == (p_anon, p_user)  # a1 is older
    assert merge.rule == "deterministic:user_id"
    assert set(merge.identifiers) == set(ids("user_id:u1", "email_sha256:e1"))
    assert graph.stores.forward[p_email] == p_user  # a chain ...
    assert graph.canonical(p_email) == p_anon
    assert graph.stores.forward[p_email] == p_anon  # ... compressed by canonical()
    assert graph.canonical(p_anon) == p_anon
    assert graph.members(p_user) == graph.members(p_anon)
    assert graph.lookup(ids("email_sha256:e1"), 10_000) == p_anon
    # Arrival order does not pick the survivor.
    reverse = IdentityGraph()
    run(reverse, list(reversed(events)))
    assert state_of(reverse) == state_of(graph)


def test_late_event_reorders_its_component() -> None:
    graph = IdentityGraph()
    graph.resolve(ids("user_id:u2", "device_id:d"), "late-2", 2_000)
    graph.resolve(ids("device_id:d", "anonymous_id:a"), "late-3", 3_000)
    # u1 used the device first (event time), but its event arrives last.
    result = graph.resolve(ids("user_id:u1", "device_id:d"), "late-1", 1_000)
    p1 = person_id_for("user_id:u1")
    assert result.person_id == p1
    moved = [c for c in result.changes if c.rule == "reorder"]
    assert {i for c in moved for i in c.identifiers} == set(ids("device_id:d", "anonymous_id:a"))
    in_order = IdentityGraph()
    run(
        in_order,
        [
            (ids("user_id:u1", "device_id:d"), "late-1", 1_000),
            (ids("user_id:u2", "device_id:d"), "late-2", 2_000),
            (ids("device_id:d", "anonymous_id:a"), "late-3", 3_000),
        ],
    )
    assert state_of(graph) == state_of(in_order)
    assert graph.members(p1) == {"user_id": ["u1"], "device_id": ["d"], "anonymous_id": ["a"]}


def test_forget_erases_a_person() -> None:
    graph = IdentityGraph()
    run(
        graph,
        [
            (ids("anonymous_id:a1", "user_id:u1"), "f1", 1_000),
            (ids("user_id:u1", "email_sha256:e1"), "f2", 2_000),
            (ids("user_id:u2", "email_sha256:e1"), "f3", 3_000),  # refused, stays a neighbour
            (ids("device_id:d1", "anonymous_id:a1"), "f4", 4_000),
        ],
    )
    person = person_id_for("user_id:u1")  # first seen with a1, and user_id ranks higher
    changes: list[IdentityChange] = []
    erased = graph.forget(person, at_ms=9_000, changes=changes)
    assert set(erased) == set(
        ids("anonymous_id:a1", "user_id:u1", "email_sha256:e1", "device_id:d1")
    )
    (forget,) = kinds(changes, ChangeKind.FORGET)
    assert forget.person_id == person
    assert forget.at == datetime.fromtimestamp(9, tz=UTC)
    assert graph.members(person) == {}
    assert graph.lookup(ids("user_id:u1")) is None
    assert persons_of(graph) == {frozenset({"user_id:u2"})}
    text = json.dumps([dict(graph.stores.links), dict(graph.stores.shapes)])
    for key in ("user_id:u1", "email_sha256:e1", "anonymous_id:a1", "device_id:d1"):
        assert key not in text  # shapes keep only hashes of the erased identifier sets
    assert graph.forget(person) == []
    # The same identifiers later make a new person again (ids are deterministic).
    again = graph.resolve(ids("user_id:u1"), "f5", 10_000)
    assert again.person_id == person_id_for("user_id:u1")
    assert [c.kind for c in again.changes] == [ChangeKind.MAP]


def test_unknown_types_rank_last_and_are_guarded_only_when_configured() -> None:
    graph = IdentityGraph()
    result = graph.resolve(ids("crm_id:c1", "anonymous_id:a1"), "u1", 1_000)
    assert result.person_id == person_id_for("anonymous_id:a1")
    users = [ids("crm_id:shared", f"user_id:u{i}") for i in range(6)]
    run(graph, [(u, f"c{i}", 2_000 + i) for i, u in enumerate(users)])
    assert graph.members(person_id_for("user_id:u0"))["crm_id"] == ["shared"]
    guarded = IdentityGraph(IdentityRules(super_node_types=("device_id", "crm_id")))
    run(guarded, [(u, f"c{i}", 2_000 + i) for i, u in enumerate(users)])
    assert "crm_id" not in guarded.members(person_id_for("user_id:u0"))
    assert guarded.members(person_id_for("crm_id:shared")) == {"crm_id": ["shared"]}


def test_huge_components_fall_back_to_arrival_order_within_the_limits() -> None:
    graph = IdentityGraph(IdentityRules(max_replay_identifiers=2))
    run(
        graph,
        [
            (ids("user_id:u2", "device_id:d", "anonymous_id:a"), "h2", 2_000),
            (ids("user_id:u1", "device_id:d"), "h1", 1_000),
        ],
    )
    assert persons_of(graph) == {
        frozenset({"user_id:u2", "device_id:d", "anonymous_id:a"}),
        frozenset({"user_id:u1"}),
    }
    assert_limits(graph)


def test_rules_from_a_config_file() -> None:
    config = tomllib.loads(
        """
        priority = ["user_id", "email_sha256", "phone_sha256", "loyalty_id", "crm_id",
                    "device_id", "anonymous_id"]
        super_node_threshold = 5
        super_node_types = ["device_id", "anonymous_id", "crm_id"]
        blocklist_extra = ["guest-checkout", "TEST-USER"]

        [limits]
        user_id = 1
        email_sha256 = 5
        loyalty_id = "unlimited"
        crm_id = 1
        """
    )
    rules = IdentityRules.from_mapping(config)
    assert rules.limit("email_sha256") == 5
    assert rules.limit("loyalty_id") is None
    assert rules.limit("crm_id") == 1
    assert rules.rank("crm_id") == 4
    assert rules.rank("something_else") == 7
    assert rules.is_blocked(" Test-User ")
    assert rules.is_blocked("NULL")
    assert not rules.is_blocked("u1")
    assert IdentityRules.from_mapping(rules.to_mapping()) == rules
    assert IdentityRules.from_mapping({}) == IdentityRules()
    with pytest.raises(IdentityError, match="super_node_treshold"):
        IdentityRules.from_mapping({"super_node_treshold": 2})
    with pytest.raises(IdentityError, match="limits.user_id"):
        IdentityRules.from_mapping({"limits": {"user_id": 0}})
    with pytest.raises(IdentityError, match="priority"):
        IdentityRules.from_mapping({"priority": "user_id"})


def test_bad_input_is_an_identity_error() -> None:
    graph = IdentityGraph()
    with pytest.raises(IdentityError, match="event_id"):
        graph.resolve(ids("user_id:u1"), "", 1)
    with pytest.raises(IdentityError, match="at_ms"):
        graph.resolve(ids("user_id:u1"), "e", 1.5)  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="type"):
        graph.resolve([Identifier("user:id", "u1")], "e", 1)
    with pytest.raises(IdentityError, match="timezone"):
        IdentityChange(ChangeKind.MAP, datetime(2024, 1, 1), "p")  # noqa: DTZ001


def test_changes_are_valid_identity_change_records() -> None:
    schema = fastavro.parse_schema(json.loads((SCHEMAS / "IdentityChange.avsc").read_text()))
    graph = IdentityGraph()
    changes: list[IdentityChange] = []
    for identifiers, event_id, at in [
        (ids("user_id:u1", "device_id:d", "user_id:null"), "r1", 1_700_000_000_000),
        (ids("user_id:u2", "device_id:d"), "r2", 1_700_000_001_000),
        (ids("anonymous_id:a", "user_id:u2"), "r3", 1_700_000_002_000),
        (ids("anonymous_id:a"), "r4", 1_600_000_000_000),
    ]:
        changes.extend(graph.resolve(identifiers, event_id, at).changes)
    graph.forget(person_id_for("user_id:u1"), at_ms=1_700_000_003_000, changes=changes)
    assert {c.kind for c in changes} == set(ChangeKind)
    for change in changes:
        record = change.to_record()
        assert fastavro.validate(record, schema)
        assert IdentityChange.from_record(record) == change


def test_pairwise_precision_recall_by_hand() -> None:
    truth = {"a": "1", "b": "1", "c": "1", "d": "2"}
    assert pairwise_precision_recall(truth, truth) == (1.0, 1.0)
    predicted = {"a": "x", "b": "x", "c": "y", "d": "y", "extra": "x"}
    assert pairwise_precision_recall(predicted, truth) == (0.5, 1 / 3)
    assert pairwise_precision_recall({}, truth) == (1.0, 0.0)
    assert pairwise_precision_recall({}, {}) == (1.0, 1.0)


# --------------------------------------------------------------------------- properties

POOL = [
    *(f"user_id:u{i}" for i in range(4)),
    *(f"email_sha256:e{i}" for i in range(4)),
    "phone_sha256:p0",
    *(f"loyalty_id:l{i}" for i in range(3)),
    *(f"device_id:d{i}" for i in range(3)),
    *(f"anonymous_id:a{i}" for i in range(5)),
    "crm_id:c0",
]
JUNK = ["user_id:null", "device_id:undefined", f"email_sha256:{sha256_hex('')}", "loyalty_id:0"]

raw_events = st.lists(
    st.tuples(
        st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True),
        st.integers(min_value=0, max_value=12),  # few distinct times: many ties
    ),
    min_size=1,
    max_size=22,
)
rules_strategy = st.builds(
    lambda threshold, emails, loyalty, cap, most: IdentityRules(
        limits={"user_id": 1, "email_sha256": emails, "phone_sha256": 1, "loyalty_id": loyalty},
        super_node_threshold=threshold,
        caps={"anonymous_id": cap, "device_id": cap},
        default_cap=cap,
        max_person_identifiers=most,
    ),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=2),
    st.integers(min_value=1, max_value=4),  # caps of the types without a limit
    st.integers(min_value=3, max_value=1_500),  # identifiers of all types per person
)


def as_events(raw: list[tuple[list[str], int]]) -> list[Event]:
    return [(ids(*keys), f"ev{i:03d}", at) for i, (keys, at) in enumerate(raw)]


@settings(max_examples=80, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_any_arrival_order_gives_the_same_persons_and_ids(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    events = as_events(raw)
    reference = IdentityGraph(rules)
    run(reference, sorted(events, key=lambda e: (e[2], e[1])))
    permuted = data.draw(st.permutations(events))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=4))
    graph = IdentityGraph(rules)
    run(graph, [*permuted, *duplicates])
    assert state_of(graph) == state_of(reference)
    assert persons_of(graph) == persons_of(reference)


@settings(max_examples=40, deadline=None)
@given(raw=raw_events, rules=rules_strategy)
def test_resolving_an_event_again_changes_nothing(
    raw: list[tuple[list[str], int]], rules: IdentityRules
) -> None:
    graph = IdentityGraph(rules)
    events = as_events(raw)
    for identifiers, event_id, at in events:
        first = graph.resolve(identifiers, event_id, at)
        snapshot = copy.deepcopy(graph.stores)
        again = graph.resolve(identifiers, event_id, at)
        assert again == Resolution(first.person_id, [])
        assert graph.stores == snapshot
    snapshot = copy.deepcopy(graph.stores)
    for identifiers, event_id, at in events:
        assert graph.resolve(identifiers, event_id, at).changes == []
    assert graph.stores == snapshot


@settings(max_examples=40, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_no_person_ever_breaks_a_limit(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    graph = IdentityGraph(rules)
    for identifiers, event_id, at in data.draw(st.permutations(as_events(raw))):
        graph.resolve(identifiers, event_id, at)
        assert_limits(graph)


@settings(max_examples=40, deadline=None)
@given(raw=raw_events, data=st.data())
def test_blocklisted_values_never_link_anything(
    raw: list[tuple[list[str], int]], data: st.DataObject
) -> None:
    events = as_events(raw)
    dirty: list[Event] = []
    for identifiers, event_id, at in events:
        junk = data.draw(st.lists(st.sampled_from(JUNK), max_size=2, unique=True))
        dirty.append(((*identifiers, *ids(*junk)), event_id, at))
    dirty.append((ids(*JUNK), "only-junk", 0))
    clean_graph, dirty_graph = IdentityGraph(), IdentityGraph()
    run(clean_graph, events)
    results = run(dirty_graph, data.draw(st.permutations(dirty)))
    # The same persons, ids and creation times ("last", the newest link of each person,
    # may differ: a set with junk is another identifier set that links the same persons).
    clean_ids, clean_persons = state_of(clean_graph)
    dirty_ids, dirty_persons = state_of(dirty_graph)
    assert dirty_ids == clean_ids
    assert {p: v[:3] for p, v in dirty_persons.items()} == {
        p: v[:3] for p, v in clean_persons.items()
    }
    assert not set(dirty_graph.partition()) & set(JUNK)
    for result in results:
        assert len([c for c in result.changes if c.rule == "blocklist"]) <= 1


@settings(max_examples=40, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_lookup_agrees_with_resolve(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    events = as_events(raw)
    stream = [*data.draw(st.permutations(events)), *data.draw(st.permutations(events))]
    graph = IdentityGraph(rules)
    for n, (identifiers, event_id, at) in enumerate(stream):
        later = at + 1 if n >= len(events) else at  # second pass: later copies
        fast = graph.lookup(identifiers, later)
        result = graph.resolve(identifiers, f"{event_id}-{n}", later)
        if fast is not None:
            assert result == Resolution(fast, [])


@settings(max_examples=60, deadline=None)
@given(
    predicted=st.dictionaries(st.integers(0, 30).map(str), st.sampled_from("abcde")),
    truth=st.dictionaries(st.integers(0, 30).map(str), st.sampled_from("vwxyz")),
)
def test_pairwise_precision_recall_matches_brute_force(
    predicted: dict[str, str], truth: dict[str, str]
) -> None:
    keys = sorted(truth)
    true_pos = pred_pos = real_pos = 0
    for a, b in itertools.combinations(keys, 2):
        same_pred = a in predicted and b in predicted and predicted[a] == predicted[b]
        same_true = truth[a] == truth[b]
        pred_pos += same_pred
        real_pos += same_true
        true_pos += same_pred and same_true
    expected = (
        true_pos / pred_pos if pred_pos else 1.0,
        true_pos / real_pos if real_pos else 1.0,
    )
    assert pairwise_precision_recall(predicted, truth) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_persons_only_join_identifiers_that_events_connect(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    """No link without evidence: every person lies inside one connected component of
    the events' identifier sets (stitching may split a component, never join two)."""
    events = as_events(raw)
    graph = IdentityGraph(rules)
    run(graph, data.draw(st.permutations(events)))
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    for keys, _at in raw:
        for other in keys[1:]:
            parent[find(other)] = find(keys[0])
    for members in persons_of(graph):
        assert len({find(key) for key in members}) == 1, sorted(members)


@settings(max_examples=60, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_super_nodes_end_in_a_person_of_their_own(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    """A guarded identifier seen beside more than ``super_node_threshold`` values of one
    limited type (a kiosk) never shares a person, whatever the arrival order."""
    graph = IdentityGraph(rules)
    run(graph, data.draw(st.permutations(as_events(raw))))
    seen_with: dict[str, dict[str, set[str]]] = {}
    for keys, _at in raw:
        for key in keys:
            if key.partition(":")[0] not in rules.super_node_types:
                continue
            for other in keys:
                type_ = other.partition(":")[0]
                if other != key and rules.limit(type_) is not None:
                    seen_with.setdefault(key, {}).setdefault(type_, set()).add(other)
    partition = graph.partition()
    for key, by_type in seen_with.items():
        if any(len(values) > rules.super_node_threshold for values in by_type.values()):
            person = partition[key]
            assert [k for k, p in partition.items() if p == person] == [key]


# --------------------------------------------------------------------------- versions


def newest_by_version(changes: Sequence[IdentityChange]) -> dict[str, str]:
    """What ``identities FINAL`` shows: each identifier's change with the highest
    version (REFUSED changes write no row; FORGET deletes)."""
    newest: dict[str, tuple[int, str | None]] = {}
    for change in changes:
        if change.kind is ChangeKind.REFUSED:
            continue
        assert change.version is not None
        person = None if change.kind is ChangeKind.FORGET else change.person_id
        for ident in change.identifiers:
            key = f"{ident.type}:{ident.value}"
            if key not in newest or change.version > newest[key][0]:
                newest[key] = (change.version, person)
    return {k: p for k, (_, p) in newest.items() if p is not None}


@settings(max_examples=80, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_the_newest_change_by_version_names_every_identifiers_person(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    events = as_events(raw)
    permuted = data.draw(st.permutations(events))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=4))
    graph = IdentityGraph(rules)
    changes = [c for r in run(graph, [*permuted, *duplicates]) for c in r.changes]
    versions = [c.version for c in changes]
    assert versions == list(range(1, len(changes) + 1))  # one sequence, in processing order
    assert newest_by_version(changes) == graph.partition()


def test_versions_go_forward_across_a_restart_and_a_redelivery_takes_none() -> None:
    graph = IdentityGraph()
    first = graph.resolve(ids("anonymous_id:x"), "visit", 2_000).changes
    again = graph.resolve(ids("anonymous_id:x"), "visit", 2_000).changes
    assert [c.version for c in first] == [1] and again == []
    # A new graph over the same (persisted) stores continues the sequence.
    restarted = IdentityGraph(stores=graph.stores)
    late = restarted.resolve(ids("user_id:u", "anonymous_id:x"), "late-login", 1_000).changes
    # MAP of u, then x's person renamed after u (first seen earlier): a MERGE.
    assert [(c.kind, c.version) for c in late] == [(ChangeKind.MAP, 2), (ChangeKind.MERGE, 3)]
    forgotten: list[IdentityChange] = []
    restarted.forget(late[0].person_id, at_ms=5_000, changes=forgotten)
    assert [c.version for c in forgotten] == [4]
    record = forgotten[0].to_record()
    assert record["version"] == 4
    assert IdentityChange.from_record(record) == forgotten[0]
    assert IdentityChange.from_record({**record, "version": None}).version is None


# --------------------------------------------------------------------------- bounds


def stores_of(graph: IdentityGraph) -> list[dict[str, Any]]:
    s = graph.stores
    return [dict(m) for m in (s.ident_to_person, s.persons, s.forward, s.links, s.shapes)]


@settings(max_examples=80, deadline=None)
@given(raw=raw_events, rules=rules_strategy, data=st.data())
def test_the_per_event_extension_equals_the_general_step(
    raw: list[tuple[list[str], int]], rules: IdentityRules, data: st.DataObject
) -> None:
    events = data.draw(st.permutations(as_events(raw)))
    fast, general = IdentityGraph(rules), IdentityGraph(rules)
    general._fast_extend = False
    assert run(fast, events) == run(general, events)
    assert stores_of(fast) == stores_of(general)


def test_caps_bound_the_types_without_a_limit_and_refusals_name_them() -> None:
    rules = IdentityRules(caps={"anonymous_id": 2, "device_id": 1}, default_cap=1)
    graph = IdentityGraph(rules)
    results = run(
        graph,
        [
            (ids("user_id:u", "anonymous_id:a1"), "s1", 1_000),
            (ids("user_id:u", "anonymous_id:a2"), "s2", 2_000),
            (ids("user_id:u", "anonymous_id:a3"), "s3", 3_000),
            (ids("user_id:u", "device_id:d1", "crm_id:c1"), "s4", 4_000),
            (ids("user_id:u", "device_id:d2", "crm_id:c2"), "s5", 5_000),
        ],
    )
    person = graph.person_of(Identifier("user_id", "u"))
    assert person is not None
    assert graph.members(person) == {
        "user_id": ["u"],
        "device_id": ["d1"],
        "anonymous_id": ["a1", "a2"],
        "crm_id": ["c1"],
    }
    refused = [c for r in results for c in kinds(r.changes, ChangeKind.REFUSED)]
    assert [(c.rule, c.person_id, [i.value for i in c.identifiers]) for c in refused] == [
        ("cap:anonymous_id", person, ["a3"]),
        ("cap:device_id", person, ["d2"]),
        ("cap:crm_id", person, ["c2"]),
    ]
    assert graph.person_of(Identifier("anonymous_id", "a3")) == person_id_for("anonymous_id:a3")
    assert IdentityRules.from_mapping(rules.to_mapping()) == rules
    assert IdentityRules.from_mapping({"caps": {"device_id": 5}}).bound("device_id") == 5
    with pytest.raises(IdentityError, match="caps.device_id"):
        IdentityRules(caps={"device_id": 0})
    with pytest.raises(IdentityError, match="max_link_sets"):
        IdentityRules.from_mapping({"max_link_sets": -1})


def test_an_event_with_too_many_or_too_long_identifiers_is_cut_and_audited() -> None:
    graph = IdentityGraph(IdentityRules(max_identifiers_per_event=3, max_value_length=8))
    many = [f"anonymous_id:a{i:02d}" for i in range(10)]
    result = graph.resolve(ids("user_id:u", *many, "device_id:" + "x" * 50), "e", 1_000)
    refused = {c.rule: [i.value for i in c.identifiers] for c in result.changes}
    assert refused["cap:value_length"] == ["x" * 8]
    assert refused["cap:identifiers_per_event"] == ["a02", "a03", "a04"]
    assert sum(len(v) for v in graph.members(result.person_id).values()) == 3


def test_a_merge_of_two_large_persons_is_bounded_by_the_caps() -> None:
    def person(strong: str, count: int, t0: int) -> list[Event]:
        """*count* sessions of the person of *strong*, each with a new anonymous id."""
        name = strong.replace(":", "-")
        return [
            (ids(strong, f"anonymous_id:{name}-{i}"), f"{name}-{i}", t0 + i) for i in range(count)
        ]

    graph = IdentityGraph()
    run(graph, [*person("user_id:ann", 400, 1_000), *person("email_sha256:ann", 400, 5_000)])
    link = graph.resolve(ids("user_id:ann", "email_sha256:ann"), "login", 9_000)
    (merge,) = kinds(link.changes, ChangeKind.MERGE)
    assert len(merge.identifiers) == 401  # the absorbed person: one e-mail, 400 anonymous ids
    assert len(graph.members(link.person_id)["anonymous_id"]) == 800

    big = IdentityGraph()
    run(big, [*person("user_id:bob", 600, 1_000), *person("email_sha256:bob", 600, 5_000)])
    refused = big.resolve(ids("user_id:bob", "email_sha256:bob"), "login", 9_000)
    assert [(c.kind, c.rule) for c in refused.changes] == [(ChangeKind.REFUSED, "cap:anonymous_id")]
    assert_limits(big)
    for rec in big.stores.persons.values():
        assert len(rec["ids"].get("anonymous_id", [])) <= big.rules.bound("anonymous_id")


def test_the_extension_equals_the_general_step_on_seeded_histories() -> None:
    """Longer histories than the property's: sessions, merges, refusals, late events."""
    import random

    types = ["user_id", "email_sha256", "phone_sha256", "loyalty_id", "device_id"]
    types += ["anonymous_id", "crm_id"]
    for seed in range(60):
        rng = random.Random(seed)
        cap = rng.randint(1, 4)
        rules = IdentityRules(
            caps={"anonymous_id": cap, "device_id": cap},
            default_cap=cap,
            super_node_threshold=rng.randint(1, 3),
            max_link_sets=rng.choice([2, 5, 1_000]),
            max_person_identifiers=rng.randint(2, 12),
        )
        events: list[Event] = []
        for i in range(rng.randint(5, 60)):
            keys = {f"{(t := rng.choice(types))}:{t[0]}{rng.randint(0, 8)}" for _ in range(4)}
            late = rng.random() < 0.3
            events.append((ids(*sorted(keys)), f"e{i:03d}", rng.randint(0, 40) if late else 99 + i))
        rng.shuffle(events)
        fast, general = IdentityGraph(rules), IdentityGraph(rules)
        general._fast_extend = False
        assert run(fast, events) == run(general, events), seed
        assert stores_of(fast) == stores_of(general), seed
        assert_limits(fast)
