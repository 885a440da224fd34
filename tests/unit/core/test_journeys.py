"""Journeys in event time: sessions, touches, conversions, lookback, expiry, lateness,
merges and re-attribution."""

from __future__ import annotations

import json
import random
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
    device: str | None = None,
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
        device_type=device,
    )


def ms(at: timedelta) -> int:
    return to_millis(T0 + at)


class Runner:
    """Feeds events like an agent: the watermark is the newest event time seen."""

    def __init__(self, rules: JourneyRules | None = None) -> None:
        self.builder = JourneyBuilder(rules)
        self.watermark = 0
        self.state: JourneyState | None = None
        self.closed: list[ClosedJourney] = []
        self.late: list[tuple[Touchpoint, str]] = []

    def feed(self, *events: Touchpoint) -> Runner:
        for event in events:
            self.watermark = wm = max(self.watermark, to_millis(event.occurred_at))
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
    assert run.state is not None and run.state.head[0] == []  # no open journey


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
    assert journey.touches == (Touch("direct", T0, "o", None, "synthetic", "shopify"),)
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
    run.flush(31 * DAY)
    assert run.closed == []
    run.flush(31 * DAY + 2 * HOUR)  # expiry plus the allowed lateness (1 h)
    [null] = run.closed
    assert not null.converted
    assert null.conversion_event_id is None
    assert null.path == ("email", "organic_social")
    assert null.revenue == 0.0
    assert null.days_to_convert is None
    # It stays open to revision: an event inside the window continues the journey.
    run.feed(tp("b", 2 * DAY, channel="email"))
    [retracted] = run.closed[1:]
    assert retracted.journey_id == null.journey_id and retracted.retracted
    assert retracted.version == 2


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
    expiry = ms(30 * DAY + HOUR) + 1  # inactivity plus the allowed lateness
    assert builder.next_deadline_ms(state) == expiry
    state, closed = builder.expire(state, expiry - 1)
    assert closed == []
    state, closed = builder.expire(state, expiry)
    assert [j.converted for j in closed] == [False]
    assert builder.next_deadline_ms(state) is None  # emitted; a new event revises it


# -- lateness --------------------------------------------------------------------------


def test_a_late_event_joins_its_journey_and_the_conversion_is_credited_again() -> None:
    run = Runner().feed(
        tp("s", 2 * DAY, channel="email"),
        tp("o", 2 * DAY + 5 * MIN, "order_completed", revenue=10.0),
    )
    [first] = run.closed
    assert first.path == ("email",) and first.version == 1  # credited at once
    run.feed(tp("late", 0 * DAY, "ad_click", "paid_search", source="ads"))  # 2 days late
    assert run.late == []
    [again] = run.closed[1:]
    assert again.journey_id == first.journey_id
    assert again.path == ("paid_search", "email") and again.version == 2


def test_an_event_past_the_max_lateness_is_refused_with_a_reason() -> None:
    run = Runner().feed(tp("a", 31 * DAY, channel="email"))
    late = tp("old", 0 * DAY, channel="organic_search")
    before = run.state.copy() if run.state is not None else None
    run.feed(late)
    [(event, reason)] = run.late
    assert event is late
    assert reason.startswith("too_late:") and "max lateness" in reason
    assert run.state == before


def test_a_late_conversion_retracts_the_null_path_it_absorbs() -> None:
    run = Runner().feed(
        tp("e", 0 * DAY, "email_click", "email", source="sendgrid"),
        tp("x", 35 * DAY, channel="organic_search"),
    )
    [null] = run.closed
    assert not null.converted and null.path == ("email",)
    run.feed(tp("o", 6 * DAY, "store_purchase", "store", source="pos", revenue=5.0))
    changes = {j.journey_id: j for j in run.closed[1:]}
    assert changes[null.journey_id].retracted
    [conversion] = [j for j in changes.values() if j.converted]
    assert conversion.path == ("email", "store")


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
    after = builder.apply(again.state, click, ms(2 * HOUR))
    assert after.duplicates == [click] and after.late == []
    assert len(after.state.head[0]) == 1


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
    assert [t[1] for t in merged.head[0]] == ["e", "s", "w"]
    survivor.state = merged
    survivor.feed(tp("o", 4 * DAY + HOUR, "purchase", "direct", source="shopify"))
    assert paths(survivor.closed) == [("email", "sms", "organic_search", "direct")]


def test_merge_reattributes_a_conversion_and_bumps_its_version() -> None:
    survivor = Runner().feed(
        tp("e", 1 * DAY, "email_click", "email", source="sendgrid"),
        tp("o", 3 * DAY, "purchase", "unassigned", source="shopify", revenue=99.0),
    )
    [v1] = survivor.closed
    assert v1.path == ("email",) and v1.version == 1
    absorbed = Runner().feed(
        tp("s", 2 * DAY, "sms_click", "sms", source="twilio", person="p2"),
        tp("after", 4 * DAY, "push_open", "push", source="push", person="p2"),
    )
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    [v2] = closed
    assert v2.journey_id == v1.journey_id
    assert v2.version == 2
    assert v2.path == ("email", "sms")
    assert v2.revenue == 99.0
    assert [t[1] for t in merged.head[0]] == ["after"]  # after the conversion: still open


def test_merge_moves_an_absorbed_conversion_to_the_survivor() -> None:
    survivor = Runner().feed(tp("e", 1 * DAY, "email_click", "email", source="sendgrid"))
    absorbed = Runner().feed(
        tp("s", 2 * DAY, "sms_click", "sms", source="twilio", person="p2"),
        tp("o", 3 * DAY, "purchase", "unassigned", source="shopify", person="p2"),
    )
    assert paths(absorbed.closed) == [("sms",)]
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    [rebuilt] = closed
    assert rebuilt.person_id == "p1"
    assert rebuilt.path == ("email", "sms")
    assert rebuilt.version == 2
    assert merged.head[0] == [] and merged.head[2] == [ms(3 * DAY), "o"]


def test_merge_without_new_touches_emits_nothing_for_survivor_conversions() -> None:
    survivor = Runner().feed(
        tp("e", 1 * DAY, "email_click", "email", source="sendgrid"),
        tp("o", 2 * DAY, "purchase", "unassigned", source="shopify"),
    )
    absorbed = Runner().feed(tp("s", 5 * DAY, "sms_click", "sms", source="twilio", person="p2"))
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    assert closed == []
    merged, closed = survivor.builder.expire(merged, ms(6 * DAY))
    assert closed == []
    assert [t[1] for t in merged.head[0]] == ["s"]


def test_merge_retracts_the_absorbed_persons_null_path() -> None:
    survivor = Runner().feed(tp("e", 0 * DAY, "email_click", "email", source="sendgrid"))
    absorbed = Runner().feed(tp("s", 1 * DAY, "sms_click", "sms", source="twilio", person="p2"))
    absorbed.flush(40 * DAY)
    [null] = absorbed.closed
    assert survivor.state is not None and absorbed.state is not None
    merged, closed = survivor.builder.merge(survivor.state, absorbed.state)
    by_id = {j.journey_id: j for j in closed}
    assert by_id[null.journey_id].retracted and by_id[null.journey_id].person_id == "p2"
    [joined] = [j for j in closed if not j.retracted]
    assert joined.path == ("email", "sms") and joined.person_id == "p1"


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
    wm = to_millis(tail.occurred_at)
    one = run.builder.apply(restored, tail, wm)
    two = run.builder.apply(run.state, tail, wm)
    assert one.closed == two.closed
    assert one.state.to_dict() == two.state.to_dict()


def test_touches_carry_the_source_and_device_of_their_events() -> None:
    """Issue 16: a journey says where each touch happened and what the conversion was, so
    analysts need not look every touch up in touchpoints."""
    run = Runner().feed(
        tp("e", 0 * MIN, "email_click", "email", source="sendgrid"),
        tp("a", 1 * HOUR, channel="organic_search", device="mobile"),
        tp("b", 1 * HOUR + MIN, device="desktop"),  # the same session: no new touch
        tp("s", 3 * HOUR, "store_purchase", "store", source="pos", revenue=20.0),
        tp("o", 9 * HOUR, "order_completed", device="tablet", revenue=5.0),
    )
    store, online = run.closed
    assert [(t.event_id, t.source, t.device) for t in store.touches] == [
        ("e", "sendgrid", ""),
        ("a", "segment", "mobile"),
        *[(t.event_id, "pos", "") for t in store.touches[2:]],
    ]
    assert (store.conversion_event_type, store.conversion_device) == ("store_purchase", "")
    assert (online.conversion_event_type, online.conversion_device) == ("order_completed", "tablet")
    assert [(t.source, t.device) for t in online.touches] == [("segment", "tablet")]
    record = store.to_record()
    assert record["touch_sources"] == [t.source for t in store.touches]
    assert record["touch_devices"] == [t.device for t in store.touches]
    assert len(record["touch_sources"]) == len(record["path"])


def test_a_state_written_before_touch_facts_reads_back_and_revises_nothing() -> None:
    """A stored state from before events and touches kept their source and device reads
    back with them empty; the journeys it already emitted are not emitted again."""
    events = [
        tp("e", 0 * MIN, "email_click", "email", source="sendgrid"),
        tp("a", 1 * HOUR, channel="organic_search", device="mobile"),
    ]
    run = Runner().feed(*events)
    assert run.state is not None
    data = json.loads(json.dumps(run.state.to_dict()))
    data["events"] = [e[:7] for e in data["events"]]
    for replay in (data["base"], data["head"]):
        replay[0] = [t[:5] for t in replay[0]]
    old = JourneyState.from_dict(data)
    assert [e[7:] for e in old.events] == [["", "", ""]] * 2
    late = tp("l", 30 * MIN, device="desktop")  # a late event: every journey is rebuilt
    order = tp("o", 2 * HOUR, "order_completed", revenue=5.0)
    wm = to_millis(order.occurred_at)
    builder = run.builder
    was, now = builder.apply(old, late, wm), builder.apply(run.state, late, wm)
    assert was.closed == now.closed == []
    was, now = builder.apply(was.state, order, wm), builder.apply(now.state, order, wm)
    assert [(j.journey_id, j.version, j.path) for j in was.closed] == [
        (j.journey_id, j.version, j.path) for j in now.closed
    ]
    [journey] = was.closed
    assert [t.source for t in journey.touches] == ["", "segment", "", "segment"]  # l, o: new
    with pytest.raises(JourneyError):
        JourneyState.from_dict({**data, "events": [e[:8] for e in run.state.to_dict()["events"]]})


def test_old_events_become_final_and_the_state_stays_bounded() -> None:
    rules = JourneyRules(max_events=20)
    run = Runner(rules)
    for i in range(200):
        run.feed(tp(f"v{i:03d}", i * HOUR, channel="direct"))
    assert run.state is not None and len(run.state.events) == 20
    assert run.state.base_key is not None
    run.feed(tp("v000", 0 * HOUR, channel="direct"))  # before the final point
    assert run.late and run.late[-1][1].startswith("too_late:")


def test_malformed_state_is_a_journey_error() -> None:
    with pytest.raises(JourneyError):
        JourneyState.from_dict({"format": 99})
    with pytest.raises(JourneyError):
        JourneyState.from_dict({"format": 2, "person_id": "p"})
    with pytest.raises(JourneyError):
        JourneyState.from_dict({**JourneyState("p").to_dict(), "events": [["x"]]})
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


# -- property: the journeys are a function of the set of events -------------------------

KINDS = [
    ("page_view", "organic_search", "segment"),
    ("page_view", "direct", "segment"),
    ("page_view", "paid_social", "segment"),
    ("email_click", "email", "sendgrid"),
    ("store_visit", "store", "pos"),
    ("order_completed", "direct", "segment"),
    ("store_purchase", "store", "pos"),
]
#: Arrival delays up to 10 days: far more than the old one-hour lateness.
MAX_DELAY_MS = 10 * 86_400_000


def _events(draw_list: list[tuple[int, int, int]]) -> list[tuple[Touchpoint, int]]:
    out = []
    for i, (minute, kind, delay) in enumerate(draw_list):
        event_type, channel, source = KINDS[kind]
        event = tp(f"ev{i:03d}", minute * MIN, event_type, channel, source=source, revenue=1.0)
        out.append((event, delay))
    return out


def final(journeys: list[ClosedJourney]) -> dict[str, tuple[object, ...]]:
    """What `journeys FINAL` shows: the latest version of each journey id, less the
    retracted ones."""
    latest: dict[str, ClosedJourney] = {}
    for j in journeys:
        if j.journey_id not in latest or j.version > latest[j.journey_id].version:
            latest[j.journey_id] = j
    return {
        jid: (j.converted, j.touches, j.revenue, j.person_id)
        for jid, j in latest.items()
        if not j.retracted
    }


def _run(events: list[Touchpoint]) -> tuple[list[ClosedJourney], list[tuple[Touchpoint, str]]]:
    run = Runner()
    run.feed(*events)
    if run.state is not None:
        run.flush(200 * DAY)
    return run.closed, run.late


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            # Mostly bursts within a few hours (sessions), some weeks apart (lookback,
            # expiry); arrival up to 10 days late, duplicates included.
            st.one_of(st.integers(0, 240), st.integers(0, 70 * 24 * 60)),
            st.integers(0, len(KINDS) - 1),
            st.integers(0, MAX_DELAY_MS),
        ),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
def test_arrival_order_and_duplicates_do_not_change_the_journeys(
    draws: list[tuple[int, int, int]], rnd: random.Random
) -> None:
    events = _events(draws)
    in_order = [e for e, _ in sorted(events, key=lambda p: (p[0].occurred_at, p[0].event_id))]
    # Redeliveries of a third of the events, up to a day after their first delivery.
    again = [(e, d + rnd.randint(0, 86_400_000)) for e, d in rnd.sample(events, len(events) // 3)]
    arrivals = sorted(events + again, key=lambda p: to_millis(p[0].occurred_at) + p[1])
    shuffled = [e for e, _ in arrivals]
    expected, late_a = _run(in_order)
    got, late_b = _run(shuffled)
    assert late_a == [] and late_b == []
    assert final(got) == final(expected)
    conversions = sum(1 for e in in_order if e.event_type in ("order_completed", "store_purchase"))
    assert sum(1 for j in final(got).values() if j[0]) == conversions


# -- property: a merge gives the journeys of one person with all the events ------------

DISCRETE = [
    ("email_click", "email", "sendgrid"),
    ("sms_click", "sms", "twilio"),
    ("ad_click", "paid_social", "ads"),
    ("purchase", "unassigned", "shopify"),
]


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
    rules = JourneyRules()
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
    assert final(closed) == final(whole.closed)


def test_split_hands_the_moved_events_and_their_journeys_to_the_other_person() -> None:
    builder = JourneyBuilder()
    state = None
    for event, route in (
        (tp("a", 0 * DAY, "email_click", "email", source="sendgrid"), "mine"),
        (tp("b", 1 * DAY, "sms_click", "sms", source="twilio"), "theirs"),
        (tp("o", 2 * DAY, "purchase", "unassigned", source="shopify"), "theirs"),
    ):
        state = builder.apply(state, event, to_millis(event.occurred_at), route).state
    assert state is not None
    [conversion] = [jid for jid, e in state.emitted.items() if e[5]]
    left, moved, changes = builder.split(state, {"theirs"})
    assert moved is not None and [e[1] for e in moved.events] == ["b", "o"]
    assert [e[1] for e in left.events] == ["a"] and changes == []
    assert conversion in moved.emitted and conversion not in left.emitted  # travels on
    other = JourneyState("p2")
    merged, rebuilt = builder.merge(other, moved)
    [again] = rebuilt
    assert again.journey_id == conversion and again.person_id == "p2"
    assert again.version == 2 and again.path == ("sms",)
    assert builder.split(left, {"nobody"})[1] is None
