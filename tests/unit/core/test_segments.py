"""Signals, profiles and segment membership on hand-made persons: the cross-device cart,
lifecycle stages, windows, lateness, merges, and the [segments] rules file."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.audiences import Audiences, Change, PersonState
from pipeline.core.model import Touchpoint, to_millis
from pipeline.core.profiles import DAY_MS, Profile, ProfileError, Signal, classify, fold
from pipeline.core.segments import SegmentConfigError, SegmentRules
from pipeline.rules import RulesFileError, load_rules

T0 = to_millis(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
H = 3_600_000


def sig(eid: str, hours: float, kind: str, **kw: object) -> Signal:
    return Signal(event_id=eid, person_id="p1", at_ms=T0 + int(hours * H), kind=kind, **kw)  # type: ignore[arg-type]


def run(
    signals: list[Signal], clock_hours: float, rules: SegmentRules | None = None
) -> tuple[PersonState, list[Change]]:
    """Feed *signals* in the given order, each with the clock at the newest signal so far
    less the allowed lateness, then move the clock to *clock_hours*."""
    aud = Audiences(rules or SegmentRules())
    state = PersonState("p1")
    changes: list[Change] = []
    newest = 0
    for s in signals:
        newest = max(newest, s.at_ms)
        changes += aud.add(state, s, newest - aud.rules.allowed_lateness_ms).changes
    changes += aud.advance(state, T0 + int(clock_hours * H)).changes
    return state, changes


def entered(changes: list[Change], segment: str) -> list[tuple[bool, float]]:
    return [(c.entered, (c.at_ms - T0) / H) for c in changes if c.segment == segment]


def test_a_cart_added_in_the_app_and_bought_on_the_web_is_not_abandoned() -> None:
    signals = [
        sig("e1", 0, "cart_add", platform="app", device="mobile", value=40.0, items=2),
        sig("e2", 5, "order", platform="web", device="desktop", value=40.0, order_id="o1"),
    ]
    state, changes = run(signals, clock_hours=72)
    assert entered(changes, "abandoned_cart") == []
    assert state.profile.cart_items == 0
    assert state.profile.devices == {"mobile": 1, "desktop": 1}
    assert state.members.keys() == {"first_time_buyer"}


def test_a_cart_added_on_one_device_and_left_enters_after_24_hours() -> None:
    signals = [
        sig("e1", 0, "cart_add", platform="app", device="mobile", value=25.0, items=1),
        sig("e2", 1, "cart_add", platform="web", device="desktop", value=15.0, items=1),
    ]
    state, changes = run(signals, clock_hours=30)
    assert entered(changes, "abandoned_cart") == [(True, 24.0)]  # the oldest add + 24 h
    assert state.profile.cart_items == 2 and state.profile.cart_value == 40.0
    assert {"abandoned_cart", "app_users_never_bought", "prospect"} == set(state.members)


def test_an_order_after_the_window_makes_the_abandoned_cart_exit() -> None:
    signals = [
        sig("e1", 0, "cart_add", value=25.0, items=1),
        sig("e2", 48, "order", value=25.0, order_id="o1"),
    ]
    _state, changes = run(signals, clock_hours=60)
    assert entered(changes, "abandoned_cart") == [(True, 24.0), (False, 48.0)]


def test_a_late_order_inside_the_allowed_lateness_never_makes_the_cart_flap() -> None:
    # The order (23 h) arrives after a signal at 24.5 h; the lateness (1 h) covers it.
    signals = [
        sig("e1", 0, "cart_add", value=25.0, items=1),
        sig("e3", 24.5, "email_open", platform="email"),
        sig("e2", 23, "order", value=25.0, order_id="o1"),
    ]
    _state, changes = run(signals, clock_hours=100)
    assert entered(changes, "abandoned_cart") == []


def test_removing_every_item_empties_the_cart() -> None:
    signals = [
        sig("e1", 0, "cart_add", value=25.0, items=1),
        sig("e2", 2, "cart_remove", value=25.0, items=1),
    ]
    state, changes = run(signals, clock_hours=48)
    assert entered(changes, "abandoned_cart") == []
    assert state.profile.cart_items == 0


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_membership_is_a_function_of_the_signal_set(rnd: random.Random) -> None:
    signals = [
        sig("a", 0, "cart_add", value=30.0, items=1, platform="app"),
        sig("b", 3, "email_open", platform="email"),
        sig("c", 30, "order", value=30.0, order_id="o1", bopis=True),
        sig("d", 40, "cart_add", value=10.0, items=1),
        sig("e", 90, "order", value=12.0, order_id="o2"),
        sig("f", 120, "email_click", platform="email"),
    ]
    calm_state, calm = run(signals, clock_hours=24 * 400)
    shuffled = signals[:]
    rnd.shuffle(shuffled)
    shuffled += rnd.sample(signals, 2)  # redelivered duplicates
    state, _ = run(shuffled, clock_hours=24 * 400)
    # Arrival beyond the allowed lateness may move when a change is announced, never
    # where the person ends up.
    assert set(state.members) == set(calm_state.members)
    assert state.profile.to_dict() == calm_state.profile.to_dict()
    assert state.profile.orders == 2 and state.profile.revenue == 42.0
    assert {c.segment for c in calm if c.entered} >= {"abandoned_cart", "bopis_customers"}


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_disorder_within_the_allowed_lateness_changes_no_entry_or_exit(
    rnd: random.Random,
) -> None:
    signals = [
        sig("a", 0, "cart_add", value=30.0, items=1, platform="app"),
        sig("b", 0.2, "email_open", platform="email"),
        sig("c", 23.5, "order", value=30.0, order_id="o1"),
        sig("d", 23.9, "cart_add", value=10.0, items=1),
        sig("e", 24.1, "cart_remove", value=10.0, items=1),
        sig("f", 47.9, "cart_add", value=12.0, items=1),
        sig("g", 48.3, "email_click", platform="email"),
    ]
    lateness = SegmentRules().allowed_lateness_ms
    arrival = sorted(signals, key=lambda s: s.at_ms + rnd.uniform(0, lateness))
    _calm_state, calm = run(signals, clock_hours=24 * 5)
    _state, changes = run(arrival, clock_hours=24 * 5)
    assert changes == calm
    assert entered(calm, "abandoned_cart") == [(True, 71.9)]


def test_lifecycle_stages_follow_orders_and_time() -> None:
    rules = SegmentRules.from_dict(
        {"lifecycle": {"repeat_orders": 2, "loyal_orders": 3, "at_risk_after": "10d",
                       "lapsed_after": "20d"}}
    )  # fmt: skip
    signals = [sig(f"o{i}", 24 * i, "order", value=10.0, order_id=f"o{i}") for i in range(3)]
    state, changes = run(signals, clock_hours=24 * 40, rules=rules)
    stages = [(c.segment, c.entered, round((c.at_ms - T0) / DAY_MS)) for c in changes]
    assert stages == [
        ("first_time_buyer", True, 0),
        ("first_time_buyer", False, 1),
        ("repeat", True, 1),
        ("repeat", False, 2),
        ("loyal", True, 2),
        ("loyal", False, 12),
        ("at_risk", True, 12),
        ("at_risk", False, 22),
        ("lapsed", True, 22),
    ]
    assert state.stage == "lapsed"
    assert state.profile.mean_days_between_orders == 1.0


def test_email_engaged_not_converted_uses_its_windows() -> None:
    signals = [
        sig("e1", 0, "email_open", platform="email"),
        sig("e2", 1, "email_click", platform="email"),
    ]
    _state, changes = run(signals, clock_hours=24 * 40)
    assert entered(changes, "email_engaged_not_converted") == [(True, 0.0), (False, 24 * 30 + 1)]


def test_a_merge_joins_the_profiles_and_the_absorbed_person_exits() -> None:
    aud = Audiences()
    app = PersonState("p-app")
    web = PersonState("p-web")
    aud.add(app, sig("a", 0, "cart_add", value=20.0, items=1, platform="app"), T0 + 30 * H)
    aud.add(web, sig("b", 2, "order", value=20.0, order_id="o1"), T0 + 30 * H)
    assert "abandoned_cart" in app.members
    exits = aud.exit_all(app, "merged into p-web")
    assert [(c.segment, c.entered) for c in exits] == [
        ("abandoned_cart", False),
        ("app_users_never_bought", False),
        ("prospect", False),
    ]
    result = aud.merge(web, app, T0 + 31 * H)
    assert web.profile.orders == 1 and web.profile.cart_items == 0
    assert web.profile.app_user
    assert "abandoned_cart" not in web.members
    assert result.profile_changed
    assert web.version > 0


def test_classify_keeps_what_profiles_need() -> None:
    now = datetime(2026, 3, 2, tzinfo=UTC)

    def tp(event_type: str, **kw: object) -> Touchpoint:
        base: dict[str, object] = {
            "event_id": "x", "source": "segment", "source_event_id": "1", "occurred_at": now,
            "received_at": now, "channel": "direct", "event_type": event_type,
            "person_id": "p",
        }  # fmt: skip
        base.update(kw)
        return Touchpoint(**base)  # type: ignore[arg-type]

    assert classify(tp("page_view")) is None
    add = classify(tp("product_added", properties={"platform": "app", "price": "12.5",
                                                   "quantity": "2"}))  # fmt: skip
    assert add is not None and (add.kind, add.value, add.items, add.platform) == (
        "cart_add", 25.0, 2, "app"
    )  # fmt: skip
    screen = classify(tp("screen_view", properties={"platform": "app"}))
    assert screen is not None and screen.kind == "app_screen"
    kiosk = classify(tp("screen_view", device_type="kiosk", properties={"platform": "app"}))
    assert kiosk is not None and kiosk.kind == "store_visit" and kiosk.platform == "store"
    order = classify(tp("purchase", revenue=30.0, properties={"fulfillment": "pickup"}))
    assert order is not None and order.kind == "order" and order.bopis
    qr = classify(tp("store_visit", source="store_signals", channel="store",
                     properties={"signal": "qr_scan"}))  # fmt: skip
    assert qr is not None and qr.kind == "qr_scan" and qr.platform == "store"
    wifi = classify(tp("wifi_login", channel="store"))
    assert wifi is not None and wifi.kind == "wifi_login" and wifi.platform == "store"


def test_state_round_trips_and_corrupt_state_is_refused() -> None:
    state, _ = run([sig("e1", 0, "cart_add", value=5.0, items=1)], clock_hours=30)
    again = PersonState.from_dict(state.to_dict())
    assert again.to_dict() == state.to_dict()
    with pytest.raises(ProfileError):
        PersonState.from_dict({"person": "p", "profile": {"orders": "x"}})
    with pytest.raises(ProfileError, match="kind"):
        Signal.from_record({"event_id": "e", "person_id": "p", "at": 1, "kind": "nope"})


def test_profile_folding_is_commutative() -> None:
    signals = [
        sig("a", 0, "cart_add", value=5.0, items=1),
        sig("b", 1, "order", value=9.0, order_id="o"),
        sig("c", 2, "cart_add", value=7.0, items=1),
    ]
    assert fold(signals).to_dict() == fold(reversed(signals)).to_dict()
    assert fold(signals).cart_value == 7.0
    assert Profile().preferred_channel == ""


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"abandoned_cart": {"cart_open_for": "soon"}}, "segments.abandoned_cart.cart_open_for"),
        ({"vip": {"where": {"revnue": {"min": 5}}}}, "segments.vip.where.revnue"),
        ({"vip": {"where": {"orders": {"least": 5}}}}, "segments.vip.where.orders"),
        ({"vip": {"recent": [{"signals": ["order"]}]}}, r"segments.vip.recent\[0\].within"),
        ({"vip": {"recent": [{"signals": ["buy"], "within": "1d"}]}}, "signals"),
        ({"vip": {"lifecycle": ["gold"]}}, "segments.vip.lifecycle"),
        ({"vip": {"colour": "red"}}, "segments.vip.colour"),
        ({"Bad-Name": {}}, "segments.Bad-Name"),
        ({"lifecycle": {"loyal_orders": 0}}, "segments.lifecycle.loyal_orders"),
        ({"lifecycle": {"at_risk_after": "90d", "lapsed_after": "30d"}}, "lapsed_after"),
        ({"nope": {"enabled": False}}, "segments.nope.enabled"),
        ({"max_signals": 2}, "segments.max_signals"),
    ],
)
def test_bad_segment_rules_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(SegmentConfigError, match=message):
        SegmentRules.from_dict(table)


def test_custom_segments_and_disabled_defaults() -> None:
    rules = SegmentRules.from_dict(
        {
            "abandoned_cart": {"cart_open_for": "2h"},
            "bopis_customers": {"enabled": False},
            "big_spenders": {"where": {"revenue": {"min": 50}},
                             "recent": [{"signals": ["order"], "within": "7d"}]},
        }
    )  # fmt: skip
    assert "bopis_customers" not in rules.segments
    signals = [
        sig("a", 0, "order", value=60.0, order_id="o1"),
        sig("b", 1, "cart_add", value=5.0, items=1),
    ]
    _state, changes = run(signals, clock_hours=24 * 10, rules=rules)
    assert entered(changes, "abandoned_cart") == [(True, 3.0)]
    assert entered(changes, "big_spenders") == [(True, 0.0), (False, 24 * 7)]
    assert timedelta(milliseconds=rules.allowed_lateness_ms) == timedelta(hours=1)


def test_the_rules_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    good = tmp_path / "rules.toml"
    good.write_text('[segments.abandoned_cart]\ncart_open_for = "6h"\n', encoding="utf-8")
    assert load_rules(good).segments.segments["abandoned_cart"].cart_open_for_ms == 6 * H
    bad = tmp_path / "bad.toml"
    bad.write_text("[segments.vip]\nwhere = { spend = 3 }\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match=r"bad.toml: \[segments\] segments.vip.where.spend"):
        load_rules(bad)
