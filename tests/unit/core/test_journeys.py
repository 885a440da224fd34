"""Journeys in event time: sessions, touches, conversions, lookback, expiry, lateness,
merges and re-attribution."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.journeys import (
    CONVERSION,
    SESSION,
    TOUCH,
    ClosedJourney,
    JourneyBuilder,
    JourneyConfigError,
    JourneyError,
    JourneyRules,
    JourneyState,
    Touch,
    Watermark,
    journey_id_for_conversion,
    parse_duration,
)
from pipeline.core.model import Campaign, Touchpoint, to_millis

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def tp(
    event_id: str,
    at: timedelta,
    event_type: str = "page_view",
    channel: str = "direct",
    *,
    source: str = "segment",
    person: str = "p1",
    campaign: str | None = None,
    revenue: float | None = None,
) -> Touchpoint:
    when = T0 + at
    return Touchpoint(
        event_id=event_id,
        source=source,
        source_event_id=event_id,
        occurred_at=when,
        received_at=when,
        channel=channel,
        event_type=event_type,
        campaign=Campaign(name=campaign) if campaign else None,
        revenue=revenue,
        person_id=person,
    )


def ms(at: timedelta) -> int:
    return to_millis(T0 + at)


class Runner:
    """Feeds events like an agent: one watermark per partition, lateness from the rules."""

    def __init__(self, rules: JourneyRules | None = None) -> None:
        self.builder = JourneyBuilder(rules)
        self.watermark = Watermark(self.builder.rules.allowed_lateness_ms)
        self.state: JourneyState | None = None
        self.closed: list[ClosedJourney] = []
        self.late: list[tuple[Touchpoint, str]] = []

    def feed(self, *events: Touchpoint) -> Runner:
        for event in events:
            wm = self.watermark.observe(to_millis(event.occurred_at))
            result = self.builder.apply(self.state, event, wm)
            self.state = result.state
            self.closed += result.closed
            self.late += result.late
        return self

    def flush(self, at: timedelta) -> Runner:
        """Advance event time to *at* (as if the stream had moved on)."""
        assert self.state is not None
        self.state, closed = self.builder.expire(self.state, ms(at))
        self.closed += closed
        return self


def paths(journeys: list[ClosedJourney]) -> list[tuple[str, ...]]:
    return [j.path for j in journeys]


# -- classification --------------------------------------------------------------------


def test_event_classification() -> None:
    rules = JourneyRules()
    assert rules.classify("segment", "page") == SESSION
    assert rules.classify("segment", "Product Viewed") == SESSION
    assert rules.classify("segment", "identify") == 0
    assert rules.classify("segment", "Order Completed") == SESSION | CONVERSION
    assert rules.classify("sendgrid", "email_click") == TOUCH
    assert rules.classify("sendgrid", "email_open") == 0
    assert rules.classify("sendgrid", "email_delivered") == 0
    assert rules.classify("pos", "store_purchase") == CONVERSION
    assert rules.classify("app", "screen_view") == SESSION


# -- sessions --------------------------------------------------------------------------


def test_session_events_collapse_into_one_touch() -> None:
    run = Runner().feed(
        tp("a", 0 * MIN, channel="organic_search"),
        tp("b", 10 * MIN),
        tp("c", 25 * MIN, "product_viewed"),
        tp("d", 40 * MIN, "order_completed", revenue=50.0),
    )
    run.flush(2 * HOUR)
    [journey] = run.closed
    assert journey.path == ("organic_search",)
    assert journey.touches[0].kind == "session"
    assert journey.touches[0].event_id == "a"
    assert journey.converted and journey.revenue == 50.0
    assert journey.conversion_event_id == "d"


def test_idle_31_minutes_starts_a_second_session() -> None:
    run = Runner().feed(
        tp("a", 0 * MIN, channel="organic_search"),
        tp("b", 31 * MIN),
        tp("c", 40 * MIN, "order_completed"),
    )
    run.flush(2 * HOUR)
    assert paths(run.closed) == [("organic_search", "direct")]
    assert run.closed[0].hops == 1


def test_idle_exactly_30_minutes_is_the_same_session() -> None:
    run = Runner().feed(tp("a", 0 * MIN, channel="email"), tp("b", 30 * MIN, "purchase"))
    run.flush(2 * HOUR)
    assert paths(run.closed) == [("email",)]


def test_new_campaign_inside_a_session_starts_a_new_touch() -> None:
    events = [
        tp("a", 0 * MIN, channel="organic_search"),
        tp("b", 5 * MIN, channel="paid_search", campaign="brand"),
        tp("c", 6 * MIN, channel="paid_search", campaign="brand"),
        tp("d", 7 * MIN, channel="paid_search", campaign="generic"),
        tp("e", 8 * MIN, "purchase"),
    ]
    run = Runner().feed(*events).flush(HOUR * 2)
    assert paths(run.closed) == [("organic_search", "paid_search", "paid_search")]
    ga4_like = Runner(JourneyRules(split_session_on_campaign=False)).feed(*events).flush(2 * HOUR)
    assert paths(ga4_like.closed) == [("organic_search",)]


def test_the_session_an_email_click_opens_is_the_same_touch() -> None:
    events = [
        tp("c", 0 * MIN, "email_click", "email", source="sendgrid"),
        tp("a", 1 * MIN, channel="email", campaign="spring"),
        tp("b", 3 * MIN),
        tp("o", 9 * MIN, "order_completed"),
    ]
    run = Runner().feed(*events).flush(2 * HOUR)
    assert paths(run.closed) == [("email",)]
    assert run.closed[0].touches[0].kind == "touch"
    both = Runner(JourneyRules(click_opens_session=False)).feed(*events).flush(2 * HOUR)
    assert paths(both.closed) == [("email", "email")]


# -- touches and conversions -----------------------------------------------------------


def test_conversion_closes_the_journey_and_a_new_one_begins() -> None:
    run = Runner().feed(
        tp("e1", 0 * MIN, "email_click", "email", source="sendgrid"),
        tp("o1", 1 * DAY, "store_purchase", "store", source="pos", revenue=80.0),
        tp("s1", 2 * DAY, "sms_click", "sms", source="twilio"),
        tp("x1", 2 * DAY + 5 * MIN, "email_open", "email", source="sendgrid"),
        tp("w1", 2 * DAY + 10 * MIN, channel="sms"),
        tp("o2", 2 * DAY + 20 * MIN, "order_completed", revenue=20.0),
    )
    run.flush(3 * DAY)
    first, second = run.closed
    assert first.path == ("email", "store")
    assert first.touches[-1].kind == "conversion"
    assert first.journey_id == journey_id_for_conversion("o1")
    assert first.days_to_convert == pytest.approx(1.0)
    assert second.path == ("sms",)  # the click and the visit it opened are one touch
    assert second.started_at == T0 + 2 * DAY
    assert run.state is not None and run.state.touches == []


def test_store_visit_before_store_purchase_is_one_touch() -> None:
    run = Runner().feed(
        tp("v", 0 * MIN, "store_visit", "store", source="pos"),
        tp("o", 12 * MIN, "store_purchase", "store", source="pos"),
    )
    run.flush(HOUR * 2)
    assert paths(run.closed) == [("store",)]


def test_conversion_without_touch_gets_a_synthetic_direct_touch() -> None:
    run = Runner().feed(tp("o", 0 * MIN, "purchase", "unassigned", source="shopify"))
    run.flush(2 * HOUR)
    [journey] = run.closed
    assert journey.path == ("direct",)
    assert journey.touches == (Touch("direct", T0, "o", None, "synthetic"),)
    assert journey.days_to_convert == 0.0


def test_second_purchase_in_the_same_session_credits_the_session_channel() -> None:
    run = Runner().feed(
        tp("a", 0 * MIN, channel="paid_social"),
        tp("o1", 5 * MIN, "order_completed"),
        tp("b", 8 * MIN),
        tp("o2", 9 * MIN, "order_completed"),
    )
    run.flush(2 * HOUR)
    assert paths(run.closed) == [("paid_social",), ("paid_social",)]
    assert run.closed[1].touches[0].kind == "synthetic"


def test_lookback_drops_touches_older_than_30_days() -> None:
    run = Runner().feed(
        tp("e", 0 * DAY, "email_click", "email", source="sendgrid"),
        tp("s", 20 * DAY, channel="paid_search"),
        tp("o", 35 * DAY, "purchase", "direct", source="shopify"),
    )
    run.flush(36 * DAY)
    [journey] = run.closed
    assert journey.path == ("paid_search", "direct")
    assert journey.started_at == T0 + 20 * DAY
    assert journey.days_to_convert == pytest.approx(15.0)


def test_ignored_events_are_not_touches() -> None:
    run = Runner().feed(
        tp("d", 0 * MIN, "email_delivered", "email", source="sendgrid"),
        tp("op", 1 * MIN, "email_open", "email", source="sendgrid"),
    )
    assert run.state is not None and run.state.is_empty()
    assert run.late == []


# -- expiry ----------------------------------------------------------------------------


def test_journey_without_conversion_expires_as_a_null_path() -> None:
    run = Runner().feed(
        tp("e", 0 * DAY, "email_click", "email", source="sendgrid"),
        tp("a", 1 * DAY, channel="organic_social"),
    )
    run.flush(30 * DAY)
    assert run.closed == []
    run.flush(31 * DAY + MIN)
    [null] = run.closed
    assert not null.converted
    assert null.conversion_event_id is None
    assert null.path == ("email", "organic_social")
    assert null.revenue == 0.0
    assert null.days_to_convert is None
    assert run.state is not None and run.state.touches == []


def test_an_event_after_the_inactivity_window_starts_a_new_journey() -> None:
    run = Runner().feed(
        tp("e", 0 * DAY, "email_click", "email", source="sendgrid"),
        tp("a", 40 * DAY, channel="organic_search"),
        tp("o", 40 * DAY + 5 * MIN, "order_completed"),
    )
    run.flush(41 * DAY)
    assert [(j.converted, j.path) for j in run.closed] == [
        (False, ("email",)),
        (True, ("organic_search",)),
    ]


def test_next_deadline() -> None:
    builder = JourneyBuilder()
    state = builder.apply(None, tp("e", 0 * MIN, "email_click", "email"), ms(0 * MIN)).state
    assert builder.next_deadline_ms(state) == ms(0 * MIN) + 1  # the buffered click
    state, _ = builder.expire(state, ms(MIN))
    assert builder.next_deadline_ms(state) == ms(30 * DAY) + 1  # its expiry
    state, closed = builder.expire(state, ms(30 * DAY) + 1)
    assert len(closed) == 1
    assert builder.next_deadline_ms(state) is None and state.is_empty()


# -- lateness --------------------------------------------------------------------------


def test_late_event_is_rejected_with_a_reason() -> None:
    run = Runner().feed(tp("a", 3 * HOUR, channel="email"))
    late = tp("old", 1 * HOUR, channel="organic_search")
    before = run.state.copy() if run.state is not None else None
    run.feed(late)
    [(event, reason)] = run.late
    assert event is late
    assert reason.startswith("late_event:") and "watermark" in reason
    assert run.state == before


def test_naive_time_is_rejected_not_raised() -> None:
    naive = Touchpoint(
        event_id="n",
        source="segment",
        source_event_id="n",
        occurred_at=datetime(2026, 3, 2, 9, 0),  # noqa: DTZ001 - the point of the test
        received_at=T0,
        channel="direct",
        event_type="page_view",
        person_id="p1",
    )
    result = JourneyBuilder().apply(None, naive, 0)
    assert [reason.split(":")[0] for _, reason in result.late] == ["invalid_time"]


def test_out_of_order_events_within_lateness_are_placed_in_order() -> None:
    run = Runner().feed(
        tp("b", 5 * MIN, channel="direct"),  # arrives first, happened second
        tp("a", 0 * MIN, channel="paid_search", campaign="brand"),
        tp("o", 20 * MIN, "order_completed"),
    )
    run.flush(2 * HOUR)
    assert run.late == []
    assert paths(run.closed) == [("paid_search",)]


def test_redelivered_event_is_a_duplicate_not_a_second_touch() -> None:
    builder = JourneyBuilder()
    click = tp("e", 0 * MIN, "email_click", "email", source="sendgrid")
    state = builder.apply(None, click, ms(0 * MIN)).state
    again = builder.apply(state, click, ms(0 * MIN))
    assert again.duplicates == [click]
    state, _ = builder.expire(again.state, ms(MIN))
    after = builder.apply(state, click, ms(2 * HOUR))
    assert after.duplicates == [click] and after.late == []
    assert len(after.state.touches) == 1


def test_watermark_helper() -> None:
    wm = Watermark(lateness_ms=1000)
    assert wm.value == 0
    assert wm.observe(10_000) == 9_000
    assert wm.observe(5_000) == 9_000
    assert Watermark.from_dict(wm.to_dict()) == wm


# -- merges and re-attribution ---------------------------------------------------------


def test_merge_joins_two_open_journeys_in_time_order() -> None:
    survivor = Runner().feed(
        tp("e", 1 * DAY, "email_click", "email", source="sendgrid"),
        tp("w", 3 * DAY, channel="organic_search"),
    )
    absorbed = Runner().feed(tp("s", 2 * DAY, "sms_click", "sms", source="twilio", person="p2"))
    assert survivor.state is not None and absorbed.state is not None
    builder = survivor.builder
    merged, closed = builder.merge(survivor.state, absorbed.state, ms(4 * DAY))
    assert closed == []
    assert merged.person_id == "p1"
    assert [t[1] for t in merged.touches] == ["e", "s", "w"]
    survivor.state = merged
    survivor.feed(tp("o", 4 * DAY + HOUR, "purchase", "direct", source="shopify"))
    survivor.flush(5 * DAY)
    assert paths(survivor.closed) == [("email", "sms", "organic_search", "direct")]


def test_merge_reattributes_a_conversion_and_bumps_its_version() -> None:
    survivor = Runner().feed(
        tp("e", 1 * DAY, "email_click", "email", source="sendgrid"),
        tp("o", 3 * DAY, "purchase", "unassigned", source="shopify", revenue=99.0),
    )
    survivor.flush(3 * DAY + 2 * HOUR)
    [v1] = survivor.closed
    assert v1.path == ("email",) and v1.version == 1
    absorbed = Runner().feed(
        tp("s", 2 * DAY, "sms_click", "sms", source="twilio", person="p2"),
        tp("late_touch", 4 * DAY, "push_open", "push", source="push", person="p2"),
    )
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    [v2] = closed
    assert v2.journey_id == v1.journey_id
    assert v2.version == 2
    assert v2.path == ("email", "sms")
    assert v2.revenue == 99.0
    # After the conversion, so it stays in the open journey (still buffered: its time is
    # above the watermark).
    assert [e[1] for e in merged.pending] == ["late_touch"]
    merged, closed = survivor.builder.expire(merged, ms(5 * DAY))
    assert closed == []
    assert [t[1] for t in merged.touches] == ["late_touch"]


def test_merge_moves_an_absorbed_conversion_to_the_survivor() -> None:
    survivor = Runner().feed(tp("e", 1 * DAY, "email_click", "email", source="sendgrid"))
    absorbed = Runner().feed(
        tp("s", 2 * DAY, "sms_click", "sms", source="twilio", person="p2"),
        tp("o", 3 * DAY, "purchase", "unassigned", source="shopify", person="p2"),
    )
    absorbed.flush(4 * DAY)
    assert paths(absorbed.closed) == [("sms",)]
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    [rebuilt] = closed
    assert rebuilt.person_id == "p1"
    assert rebuilt.path == ("email", "sms")
    assert rebuilt.version == 2
    assert merged.touches == [] and merged.last_conversion == [ms(3 * DAY), "o"]


def test_merge_without_new_touches_emits_nothing_for_survivor_conversions() -> None:
    survivor = Runner().feed(
        tp("e", 1 * DAY, "email_click", "email", source="sendgrid"),
        tp("o", 2 * DAY, "purchase", "unassigned", source="shopify"),
    )
    survivor.flush(3 * DAY)
    absorbed = Runner().feed(tp("s", 5 * DAY, "sms_click", "sms", source="twilio", person="p2"))
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    assert closed == []
    merged, closed = survivor.builder.expire(merged, ms(6 * DAY))
    assert closed == []
    assert [t[1] for t in merged.touches] == ["s"]


def test_merge_replays_buffered_events_of_both_persons() -> None:
    builder = JourneyBuilder()
    survivor = builder.apply(None, tp("a", 0 * MIN, channel="email"), ms(-HOUR)).state
    absorbed = builder.apply(
        None, tp("b", 10 * MIN, "sms_click", "sms", person="p2"), ms(-HOUR)
    ).state
    merged, closed = builder.merge(survivor, absorbed, ms(HOUR))
    assert closed == []
    assert [t[1] for t in merged.touches] == ["a", "b"]
    assert merged.pending == []


# -- state -----------------------------------------------------------------------------


def test_state_round_trips_through_json_and_continues_identically() -> None:
    events = [
        tp("e", 0 * MIN, "email_click", "email", source="sendgrid"),
        tp("o", 1 * HOUR, "purchase", "unassigned", source="shopify", revenue=5.0),
        tp("a", 2 * HOUR, channel="organic_search"),
        tp("b", 2 * HOUR + MIN),
    ]
    run = Runner().feed(*events)
    assert run.state is not None
    data = json.loads(json.dumps(run.state.to_dict()))
    restored = JourneyState.from_dict(data)
    assert restored == run.state
    assert restored.to_dict() == run.state.to_dict()
    tail = tp("o2", 3 * HOUR, "order_completed", revenue=7.0)
    wm = run.watermark.observe(to_millis(tail.occurred_at))
    one = run.builder.apply(restored, tail, wm)
    two = run.builder.apply(run.state, tail, wm)
    assert one.closed == two.closed
    assert one.state.to_dict() == two.state.to_dict()


def test_malformed_state_is_a_journey_error() -> None:
    with pytest.raises(JourneyError):
        JourneyState.from_dict({"format": 99})
    with pytest.raises(JourneyError):
        JourneyState.from_dict({"format": 1, "person_id": "p"})
    with pytest.raises(JourneyError):
        JourneyBuilder().apply(None, tp("x", 0 * MIN, person=""), 0)


# -- closed journeys -------------------------------------------------------------------


def test_closed_journey_metrics_and_avro_record() -> None:
    touches = tuple(
        Touch(ch, T0 + i * HOUR, f"t{i}")
        for i, ch in enumerate(["email", "email", "paid_search", "email"])
    )
    journey = ClosedJourney("j", "p", T0, T0 + 2 * DAY, True, "o", 10.0, touches)
    assert journey.touch_count == 4
    assert journey.hops == 2
    assert journey.days_to_convert == 2.0
    record = journey.to_record()
    schema = json.loads((SCHEMAS / "Journey.avsc").read_text())
    assert set(record) == {f["name"] for f in schema["fields"]}
    assert record["path"] == ["email", "email", "paid_search", "email"]


# -- rules -----------------------------------------------------------------------------


def test_rules_from_dict() -> None:
    rules = JourneyRules.from_dict(
        {
            "session_timeout": "45m",
            "lookback": "7d",
            "inactivity_window": 86400,
            "allowed_lateness": "2h",
            "touch_event_types": {"add": ["WhatsApp Click"], "remove": ["chat"]},
            "conversion_event_types": ["purchase"],
            "conversion_is_touch": False,
        }
    )
    assert rules.session_timeout == 45 * MIN
    assert rules.lookback == 7 * DAY
    assert rules.inactivity == DAY
    assert rules.allowed_lateness_ms == 2 * 3_600_000
    assert "whatsapp_click" in rules.touch_event_types
    assert "chat" not in rules.touch_event_types
    assert rules.conversion_event_types == frozenset({"purchase"})
    assert JourneyRules.from_dict(rules.to_dict()) == rules
    with pytest.raises(JourneyConfigError, match="lookbak"):
        JourneyRules.from_dict({"lookbak": "7d"})
    with pytest.raises(JourneyConfigError, match="session_timeout"):
        JourneyRules.from_dict({"session_timeout": "soon"})
    with pytest.raises(JourneyConfigError, match="touch_event_types"):
        JourneyRules.from_dict({"touch_event_types": "email_click"})
    assert parse_duration("500ms") == timedelta(milliseconds=500)


# -- property: order within the lateness does not matter -------------------------------

KINDS = [
    ("page_view", "organic_search", "segment"),
    ("page_view", "direct", "segment"),
    ("page_view", "paid_social", "segment"),
    ("email_click", "email", "sendgrid"),
    ("store_visit", "store", "pos"),
    ("order_completed", "direct", "segment"),
    ("store_purchase", "store", "pos"),
]
LATENESS_MS = 3_600_000


def _events(draw_list: list[tuple[int, int, int]]) -> list[tuple[Touchpoint, int]]:
    out = []
    for i, (minute, kind, jitter) in enumerate(draw_list):
        event_type, channel, source = KINDS[kind]
        event = tp(f"ev{i:03d}", minute * MIN, event_type, channel, source=source, revenue=1.0)
        out.append((event, jitter))
    return out


def _run(events: list[Touchpoint]) -> tuple[list[ClosedJourney], list[tuple[Touchpoint, str]]]:
    run = Runner(JourneyRules(allowed_lateness=timedelta(milliseconds=LATENESS_MS)))
    run.feed(*events)
    if run.state is not None:
        run.flush(200 * DAY)
    return run.closed, run.late


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            # Mostly bursts within a few hours (sessions, out-of-order arrivals), some
            # weeks apart (lookback, expiry).
            st.one_of(st.integers(0, 240), st.integers(0, 70 * 24 * 60)),
            st.integers(0, len(KINDS) - 1),
            st.integers(0, LATENESS_MS - 1),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_shuffling_within_the_lateness_gives_the_same_journeys(
    draws: list[tuple[int, int, int]],
) -> None:
    events = _events(draws)
    in_order = [e for e, _ in sorted(events, key=lambda p: (p[0].occurred_at, p[0].event_id))]
    # Arrival = occurred_at + a delay below the lateness: never late, often out of order.
    shuffled = [e for e, _ in sorted(events, key=lambda p: to_millis(p[0].occurred_at) + p[1])]
    expected, late_a = _run(in_order)
    got, late_b = _run(shuffled)
    assert late_a == [] and late_b == []
    assert got == expected
    conversions = sum(1 for e in in_order if e.event_type in ("order_completed", "store_purchase"))
    assert sum(1 for j in got if j.converted) == conversions


# -- property: a merge gives the journeys of one person with all the events ------------

DISCRETE = [
    ("email_click", "email", "sendgrid"),
    ("sms_click", "sms", "twilio"),
    ("ad_click", "paid_social", "ads"),
    ("purchase", "unassigned", "shopify"),
]


def _latest(journeys: list[ClosedJourney]) -> dict[str, tuple[object, ...]]:
    latest: dict[str, ClosedJourney] = {}
    for j in journeys:
        if j.journey_id not in latest or j.version > latest[j.journey_id].version:
            latest[j.journey_id] = j
    return {jid: (j.converted, j.touches, j.revenue, j.person_id) for jid, j in latest.items()}


def _as_person(event: Touchpoint, person: str) -> Touchpoint:
    return event.with_person(person)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20 * 24 * 60), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_merge_equals_one_person_with_all_events(draws: list[tuple[int, int, bool]]) -> None:
    """Discrete touches split between two persons, then merged, give the journeys of one
    person who had them all (latest version of each journey id)."""
    rules = JourneyRules(reattribution_keep=100, reattribution_window=timedelta(days=90))
    events = []
    for i, (minute, kind, to_p2) in enumerate(draws):
        event_type, channel, source = DISCRETE[kind]
        person = "p2" if to_p2 else "p1"
        event = tp(f"ev{i:03d}", minute * MIN, event_type, channel, source=source, person=person)
        events.append(event)
    events.sort(key=lambda e: (e.occurred_at, e.event_id))

    whole = Runner(rules).feed(*[_as_person(e, "p1") for e in events])
    whole.flush(60 * DAY)

    survivor = Runner(rules).feed(*[e for e in events if e.person_id == "p1"])
    absorbed = Runner(rules).feed(*[e for e in events if e.person_id == "p2"])
    closed: list[ClosedJourney] = []
    for run in (survivor, absorbed):
        if run.state is not None:
            run.flush(21 * DAY)
            closed += run.closed
    # A survivor without journey state yet merges from an empty state.
    merged, rebuilt = survivor.builder.merge(
        survivor.state or JourneyState("p1"), absorbed.state or JourneyState("p2")
    )
    closed += rebuilt
    merged, tail = survivor.builder.expire(merged, ms(60 * DAY))
    closed += tail
    assert _latest(closed) == _latest(whole.closed)
