"""Attribution models: hand-computed examples and Hypothesis properties.

Every expected number below is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import attribution as attr
from pipeline.core.attribution import (
    MODELS,
    AttributionConfig,
    AttributionError,
    ChannelWeights,
    Touch,
    TouchCredit,
    apply_snapshot,
    attribute_conversion,
    attribute_paths,
    first_touch,
    fit_markov,
    fit_shapley,
    last_non_direct,
    last_touch,
    linear,
    position_based,
    shapley_values,
    snapshot_from_record,
    time_decay,
)
from pipeline.core.paths import (
    PathFileError,
    PathRow,
    PathStats,
    aggregate_journeys,
    parse_path_text,
    read_path_file,
    write_path_file,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HEADER = "path,total_conversions,total_conversion_value,total_null\n"


def touches(*spec: tuple[str, float]) -> list[Touch]:
    """Touches from (channel, hours before T0)."""
    return [
        Touch(channel, T0 - timedelta(hours=hours), event_id=f"e{i}")
        for i, (channel, hours) in enumerate(spec)
    ]


def credits(result: Sequence[TouchCredit]) -> list[float]:
    return [c.credit for c in result]


def by_channel(result: Sequence[TouchCredit]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in result:
        out[c.channel] = out.get(c.channel, 0.0) + c.credit
    return out


def flat(totals: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """{channel: (conversions, value)} -> {"channel conversions": .., "channel value": ..}."""
    out: dict[str, float] = {}
    for channel, (conversions, value) in totals.items():
        out[f"{channel} conversions"] = conversions
        out[f"{channel} value"] = value
    return out


def approx_flat(expected: Mapping[str, tuple[float, float]]) -> object:
    return pytest.approx(flat(expected))


def paths(text: str) -> PathStats:
    return parse_path_text(HEADER + text)


# -- rule-based models, per conversion -------------------------------------------------

JOURNEY = touches(("email", 336), ("paid_search", 168), ("direct", 0))


def test_models_contract_names() -> None:
    assert MODELS == (
        "first_touch",
        "last_touch",
        "last_non_direct",
        "linear",
        "time_decay",
        "position_based",
        "markov",
        "shapley",
    )


def test_first_and_last_touch() -> None:
    assert credits(first_touch(JOURNEY, T0, 90.0)) == [1.0, 0.0, 0.0]
    assert credits(last_touch(JOURNEY, T0)) == [0.0, 0.0, 1.0]
    assert [c.revenue_credit for c in first_touch(JOURNEY, T0, 90.0)] == [90.0, 0.0, 0.0]


def test_touches_out_of_order_stay_aligned() -> None:
    shuffled = [JOURNEY[2], JOURNEY[0], JOURNEY[1]]
    result = first_touch(shuffled, T0)
    # The earliest touch is email, at input index 1; positions are ranks in time.
    assert credits(result) == [0.0, 1.0, 0.0]
    assert [c.position for c in result] == [2, 0, 1]
    assert [c.event_id for c in result] == ["e2", "e0", "e1"]


def test_last_non_direct() -> None:
    # email, paid_search, direct: the last non-direct touch is paid_search.
    assert credits(last_non_direct(JOURNEY, T0)) == [0.0, 1.0, 0.0]
    # Only direct touches: the last direct touch takes it all.
    only_direct = touches(("direct", 5), ("direct", 1))
    assert credits(last_non_direct(only_direct, T0)) == [0.0, 1.0]


def test_linear_counts_repeats() -> None:
    result = linear(touches(("email", 3), ("email", 2), ("sms", 1)), T0, 30.0)
    assert credits(result) == pytest.approx([1 / 3] * 3)
    assert by_channel(result) == pytest.approx({"email": 2 / 3, "sms": 1 / 3})
    assert [c.revenue_credit for c in result] == pytest.approx([10.0] * 3)


def test_time_decay_default_half_life_is_seven_days() -> None:
    # 336 h, 168 h and 0 h before: weights 0.25, 0.5, 1 -> / 1.75 = 1/7, 2/7, 4/7.
    assert credits(time_decay(JOURNEY, T0)) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    # Half-life 336 h: weights 0.5, 0.5 ** 0.5, 1.
    w = [0.5, 0.5**0.5, 1.0]
    assert credits(time_decay(JOURNEY, T0, half_life_hours=336)) == pytest.approx(
        [x / sum(w) for x in w]
    )
    # Configurable through the config as well.
    cfg = AttributionConfig(half_life_hours=336)
    assert credits(attribute_conversion("time_decay", JOURNEY, T0, config=cfg)) == pytest.approx(
        [x / sum(w) for x in w]
    )


def test_time_decay_touch_after_conversion_counts_as_zero_hours() -> None:
    late = touches(("email", 168), ("sms", -5))
    # sms is 5 h after the conversion: 0 h before it; weights 0.5 and 1.
    assert credits(time_decay(late, T0)) == pytest.approx([1 / 3, 2 / 3])


def test_time_decay_tiny_half_life_does_not_underflow() -> None:
    result = time_decay(touches(("email", 5000), ("sms", 4000)), T0, half_life_hours=0.5)
    assert credits(result) == pytest.approx([0.0, 1.0])


def test_position_based() -> None:
    four = touches(("email", 4), ("sms", 3), ("push", 2), ("direct", 1))
    assert credits(position_based(four, T0)) == pytest.approx([0.4, 0.1, 0.1, 0.4])
    three = touches(("email", 3), ("sms", 2), ("direct", 1))
    assert credits(position_based(three, T0)) == pytest.approx([0.4, 0.2, 0.4])
    # Two touches: first and last weights renormalised, 40/40 -> 50/50, 60/20/20 -> 75/25.
    two = touches(("email", 2), ("direct", 1))
    assert credits(position_based(two, T0)) == pytest.approx([0.5, 0.5])
    assert credits(position_based(two, T0, weights=(60, 20, 20))) == pytest.approx([0.75, 0.25])
    assert credits(position_based(two, T0, weights=(0, 1, 0))) == pytest.approx([0.5, 0.5])
    # One touch takes everything.
    assert credits(position_based(touches(("email", 1)), T0)) == [1.0]
    # Weights are normalised: 30/40/30 on four touches -> 0.3, 0.2, 0.2, 0.3.
    assert credits(position_based(four, T0, weights=(30, 40, 30))) == pytest.approx(
        [0.3, 0.2, 0.2, 0.3]
    )


@pytest.mark.parametrize(
    "bad",
    [
        lambda: first_touch([], T0),
        lambda: linear(JOURNEY, datetime(2024, 3, 1)),  # noqa: DTZ001 - the point of the test
        lambda: Touch("email", datetime(2024, 3, 1)),  # noqa: DTZ001
        lambda: Touch("", T0),
        lambda: linear(JOURNEY, T0, math.nan),
        lambda: position_based(JOURNEY, T0, weights=(1, 2)),
        lambda: position_based(JOURNEY, T0, weights=(0, 0, 0)),
        lambda: time_decay(JOURNEY, T0, half_life_hours=0),
        lambda: AttributionConfig(markov_order=0),
        lambda: attribute_conversion("nope", JOURNEY, T0),
    ],
)
def test_bad_inputs_raise_attribution_error(bad: Callable[[], object]) -> None:
    with pytest.raises(AttributionError):
        bad()


def test_revenue_credits_sum_exactly() -> None:
    result = linear(touches(("a", 3), ("b", 2), ("c", 1)), T0, 100.0)
    assert math.fsum(c.revenue_credit for c in result) == pytest.approx(100.0, abs=1e-12)
    assert math.fsum(c.credit for c in result) == pytest.approx(1.0, abs=1e-15)


def test_non_utc_timezones_are_fine() -> None:
    paris = timezone(timedelta(hours=1))
    ts = [Touch("email", datetime(2024, 3, 1, 13, 0, tzinfo=paris)), Touch("sms", T0)]
    # Same instant: input order breaks the tie.
    assert credits(first_touch(ts, T0)) == [1.0, 0.0]


@dataclass(frozen=True)
class OtherTouch:
    """Not our Touch: any object with channel, at, campaign and event_id will do."""

    channel: str
    at: datetime
    event_id: str
    campaign: str | None = None


def test_any_touch_like_object_is_accepted_and_checked() -> None:
    other = [OtherTouch("email", T0 - timedelta(hours=1), "x1"), OtherTouch("sms", T0, "x2")]
    result = attribute_conversion("last_touch", other, T0, 8.0)
    assert [(c.event_id, c.credit, c.revenue_credit) for c in result] == [
        ("x1", 0.0, 0.0),
        ("x2", 1.0, 8.0),
    ]
    naive = [OtherTouch("email", datetime(2024, 3, 1), "x3")]  # noqa: DTZ001
    with pytest.raises(AttributionError, match="naive"):
        linear(naive, T0)


# -- Markov ----------------------------------------------------------------------------

CLASSIC = paths("C1 > C2 > C3,1,10,0\nC1,0,0,1\nC2 > C3,0,0,1\n")


def test_markov_classic_example_by_hand() -> None:
    # Transitions: start->C1 2/3, start->C2 1/3; C1->C2 1/2, C1->null 1/2; C2->C3 1;
    # C3->conv 1/2, C3->null 1/2.
    # P = 2/3 * 1/2 * 1 * 1/2 + 1/3 * 1 * 1/2 = 1/6 + 1/6 = 1/3.
    # Without C1: only start->C2->C3 survives: 1/3 * 1/2 = 1/6 -> RE = 1 - (1/6)/(1/3) = 0.5.
    # Without C2 or C3 nothing converts: RE = 1. Shares 0.5/2.5, 1/2.5, 1/2.5.
    snap = fit_markov(CLASSIC)
    assert snap.conversion_probability == pytest.approx(1 / 3)
    assert snap.removal_effects == pytest.approx({"C1": 0.5, "C2": 1.0, "C3": 1.0})
    assert snap.weights == pytest.approx({"C1": 0.2, "C2": 0.4, "C3": 0.4})
    totals = attribute_paths(CLASSIC, ["markov"])["markov"].as_dict()
    assert flat(totals) == pytest.approx(flat({"C1": (0.2, 2), "C2": (0.4, 4), "C3": (0.4, 4)}))


def test_markov_with_a_cycle_by_hand() -> None:
    # a>b>b>c (1 conv), a (1 null), b>c (1 null), a>c>a (2 conv, 1 null); b>b collapses.
    # start: a 5/6, b 1/6. a: b 1/8, c 3/8, conv 2/8, null 2/8. b: c 1. c: a 3/5, conv 1/5,
    # null 1/5. x_a = x_b/8 + 3x_c/8 + 1/4, x_b = x_c, x_c = 1/5 + 3x_a/5 -> x_a = x_c = 1/2,
    # P = 1/2. Without b: x_a = 3x_c/8 + 1/4 -> x_a = 0.325/0.775 = 13/31, P = 5/6 * 13/31.
    # Without a: start->b->c: x_c = 1/5, P = 1/6 * 1/5. Without c: x_a = 1/4, P = 5/24.
    stats = paths("a > b > b > c,1,10,0\na,0,0,1\nb > c,0,0,1\na > c > a,2,30,1\n")
    snap = fit_markov(stats)
    assert snap.conversion_probability == pytest.approx(0.5)
    assert snap.removal_effects == pytest.approx(
        {"a": 1 - (1 / 30) / 0.5, "b": 1 - (5 / 6 * 13 / 31) / 0.5, "c": 1 - (5 / 24) / 0.5}
    )


def test_markov_second_order_remembers_the_previous_channel() -> None:
    # a>b converts, d>b does not. First order: b->conv 1/2 whatever came before, so
    # RE(a) = RE(d) = 1/2, RE(b) = 1 -> a 1/4, d 1/4, b 1/2.
    # Second order: states (a), (d), (a,b), (d,b); (a,b)->conv 1, (d,b)->null 1.
    # P = 1/2; without a: 0 -> RE 1; without d: 1/2 -> RE 0; without b: RE 1.
    stats = paths("a > b,1,0,0\nd > b,0,0,1\n")
    assert fit_markov(stats).weights == pytest.approx({"a": 0.25, "b": 0.5, "d": 0.25})
    assert fit_markov(stats, order=2).weights == pytest.approx({"a": 0.5, "b": 0.5, "d": 0.0})
    # The classic example needs no memory: order 2 gives the same shares as order 1.
    assert fit_markov(CLASSIC, order=2).weights == pytest.approx(fit_markov(CLASSIC).weights)


def _random_stats(seed: int, n_rows: int = 300, n_channels: int = 6) -> PathStats:
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        length = rng.randint(1, 6)
        path = tuple(f"c{rng.randrange(n_channels)}" for _ in range(length))
        conversions = rng.randint(0, 3)
        rows.append(PathRow(path, conversions, conversions * 10.0, rng.randint(0, 5)))
    return PathStats.from_rows(rows)


@pytest.mark.parametrize("order", [1, 2])
def test_markov_iterative_solver_matches_dense(order: int, monkeypatch: pytest.MonkeyPatch) -> None:
    stats = _random_stats(3)
    dense = fit_markov(stats, order)
    monkeypatch.setattr(attr.markov, "MARKOV_DENSE_STATE_LIMIT", 0)
    sparse = fit_markov(stats, order)
    assert sparse.conversion_probability == pytest.approx(dense.conversion_probability, abs=1e-12)
    assert sparse.weights == pytest.approx(dense.weights, abs=1e-10)


def test_markov_without_conversions_falls_back_to_linear() -> None:
    stats = paths("a > b,0,0,3\n")
    snap = fit_markov(stats)
    assert snap.weights == {"a": 0.0, "b": 0.0}
    result = attribute_conversion("markov", touches(("a", 2), ("b", 1)), T0, snapshot=snap)
    assert credits(result) == [0.5, 0.5]


def test_markov_snapshot_applied_to_one_conversion() -> None:
    snap = fit_markov(CLASSIC)  # C1 0.2, C2 0.4, C3 0.4
    journey = touches(("C1", 3), ("C3", 2), ("C3", 1))
    result = attribute_conversion("markov", journey, T0, 60.0, snapshot=snap)
    # Over the path's channels: C1 0.2 / 0.6 = 1/3, C3 2/3 split over its two touches.
    assert credits(result) == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert [c.revenue_credit for c in result] == pytest.approx([20.0, 20.0, 20.0])
    # An unknown channel gets nothing; all unknown -> linear.
    assert credits(apply_snapshot(snap, touches(("C1", 2), ("tv", 1)), T0)) == [1.0, 0.0]
    assert credits(apply_snapshot(snap, touches(("tv", 2), ("radio", 1)), T0)) == [0.5, 0.5]
    # No snapshot yet: linear.
    assert credits(attribute_conversion("markov", journey, T0)) == pytest.approx([1 / 3] * 3)
    with pytest.raises(AttributionError):
        attribute_conversion("shapley", journey, T0, snapshot=snap)


def test_snapshot_records_round_trip_through_json() -> None:
    stats = _random_stats(5)
    for snap in (fit_markov(stats), fit_shapley(stats)):
        back = snapshot_from_record(json.loads(json.dumps(snap.to_record())))
        assert back.model == snap.model
        for channels in (["c0", "c1"], ["c2", "c3", "c5"], ["c4"]):
            assert back.channel_weights(channels) == pytest.approx(snap.channel_weights(channels))
    with pytest.raises(AttributionError):
        snapshot_from_record({"model": "markov"})
    with pytest.raises(AttributionError):
        snapshot_from_record({"model": "lstm"})


# -- Shapley ---------------------------------------------------------------------------


def test_shapley_two_channels_by_hand() -> None:
    # v({a}) = 1/4, v({b}) = 1/2, v({a,b}) = 3/4.
    # phi_a = 1/2 (v(a) - 0) + 1/2 (v(ab) - v(b)) = 1/8 + 1/8 = 1/4
    # phi_b = 1/2 (v(b) - 0) + 1/2 (v(ab) - v(a)) = 1/4 + 1/4 = 1/2 -> shares 1/3, 2/3.
    # Conversions: {a}: 1 -> a; {b}: 1 -> b; {a,b}: 3 -> a 1, b 2. Totals a 2, b 3.
    stats = paths("a,1,10,3\nb,1,20,1\na > b,2,60,1\nb > a > b,1,30,0\n")
    snap = fit_shapley(stats)
    assert snap.set_values[frozenset({"a", "b"})] == pytest.approx(0.75)
    assert snap.set_shares[frozenset({"a", "b"})] == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    totals = attribute_paths(stats, ["shapley"])["shapley"].as_dict()
    # Value of {a,b} is 90, split 30 / 60.
    assert flat(totals) == pytest.approx(flat({"a": (2.0, 40.0), "b": (3.0, 80.0)}))
    assert snap.weights == pytest.approx({"a": 0.4, "b": 0.6})


def test_shapley_negative_values_are_clipped() -> None:
    # v(a) = 0.9, v(b) = 0.1, v(ab) = 0.2. phi_b = 1/2 (0.1) + 1/2 (0.2 - 0.9) = -0.3 -> 0,
    # so a takes all of {a,b}'s conversions.
    stats = paths("a,9,0,1\nb,1,0,9\na > b,2,0,8\n")
    assert fit_shapley(stats).set_shares[frozenset({"a", "b"})] == pytest.approx(
        {"a": 1.0, "b": 0.0}
    )


# A corpus checked by hand against DP6 ``attribution_shapley(size=3, order=False,
# values_col="conv_rate")``: v(S) = conversions / (conversions + nulls) of the exact set,
# Shapley values over every coalition, then x / x.sum() * the set's conversion value, with
# no clipping. Weights for n = 2: 1/2, 1/2; for n = 3: 1/3, 1/6, 1/3 by coalition size.
DP6_CORPUS = (
    "a,9,90,1\n"  # v(a) = 0.9
    "b,1,10,9\n"  # v(b) = 0.1
    "c,1,5,3\n"  # v(c) = 0.25
    "a > b,2,40,8\n"  # v(ab) = 0.2
    "b > c > b,1,20,1\n"  # v(bc) = 0.5 (a set: order and repeats do not count)
    "c > a > b,1,60,0\n"  # v(abc) = 1; v(ac) = 0, never seen
)


def test_shapley_keep_negatives_reproduces_dp6_on_a_hand_checked_corpus() -> None:
    stats = paths(DP6_CORPUS)
    # {a,b}: phi_a = 1/2 (0.9) + 1/2 (0.2 - 0.1) = 0.5, phi_b = 1/2 (0.1) + 1/2 (0.2 - 0.9)
    #   = -0.3; sum 0.2 = v(ab), shares 2.5 and -1.5 of 2 conversions, value 40.
    # {b,c}: phi_b = 1/2 (0.1) + 1/2 (0.5 - 0.25) = 0.175, phi_c = 1/2 (0.25) + 1/2 (0.5 - 0.1)
    #   = 0.325; shares 0.35 and 0.65 of 1 conversion, value 20.
    # {a,b,c}: phi_a = 1/3 (0.9) + 1/6 (0.2 - 0.1) + 1/6 (0 - 0.25) + 1/3 (1 - 0.5) = 53/120,
    #   phi_b = 1/3 (0.1) + 1/6 (0.2 - 0.9) + 1/6 (0.5 - 0.25) + 1/3 (1 - 0) = 35/120,
    #   phi_c = 1/3 (0.25) + 1/6 (0 - 0.9) + 1/6 (0.5 - 0.1) + 1/3 (1 - 0.2) = 32/120;
    #   sum 1 = v(abc), 1 conversion, value 60.
    keep = attribute_paths(stats, ["shapley"], shapley_negatives="keep")["shapley"].as_dict()
    expected = {
        "a": (9 + 2 * 2.5 + 53 / 120, 90 + 40 * 2.5 + 60 * 53 / 120),
        "b": (1 - 2 * 1.5 + 0.35 + 35 / 120, 10 - 40 * 1.5 + 20 * 0.35 + 60 * 35 / 120),
        "c": (1 + 0.65 + 32 / 120, 5 + 20 * 0.65 + 60 * 32 / 120),
    }
    assert flat(keep) == pytest.approx(flat(expected))
    assert keep["b"][0] < 0 and keep["b"][1] < 0  # a negative share stays negative
    assert sum(c for c, _ in keep.values()) == pytest.approx(15.0)
    assert sum(v for _, v in keep.values()) == pytest.approx(225.0)
    # The default clips phi_b of {a,b} to 0: a takes all of {a,b}; nothing else changes.
    clip = attribute_paths(stats, ["shapley"])["shapley"].as_dict()
    explicit = attribute_paths(stats, ["shapley"], shapley_negatives="clip")["shapley"]
    assert clip == explicit.as_dict()
    expected_clip = {
        "a": (9 + 2 + 53 / 120, 90 + 40 + 60 * 53 / 120),
        "b": (1 + 0.35 + 35 / 120, 10 + 20 * 0.35 + 60 * 35 / 120),
        "c": expected["c"],
    }
    assert flat(clip) == pytest.approx(flat(expected_clip))
    with pytest.raises(AttributionError, match="shapley negatives"):
        attribute_paths(stats, ["shapley"], shapley_negatives="drop")


def test_shapley_unseen_set_uses_observed_values_and_unobserved_zero() -> None:
    snap = fit_shapley(paths("a,1,0,3\nb,1,0,1\na > b,3,0,1\n"))
    # {a, c} never seen: v(a) = 1/4, v(c) = v(ac) = 0 -> phi_a = 1/8, phi_c = -1/8 -> a all.
    result = apply_snapshot(snap, touches(("c", 2), ("a", 1)), T0, 10.0)
    assert credits(result) == pytest.approx([0.0, 1.0])
    # {c, d} entirely unknown: every value 0 -> equal split of the channels.
    assert credits(apply_snapshot(snap, touches(("c", 2), ("d", 1)), T0)) == [0.5, 0.5]


def test_shapley_values_three_players_glove_game() -> None:
    # Glove game: L + R1 or L + R2 is worth 1. phi_L = 2/3, phi_R1 = phi_R2 = 1/6.
    def v(s: frozenset[str]) -> float:
        return 1.0 if "L" in s and ({"R1", "R2"} & s) else 0.0

    assert shapley_values(["L", "R1", "R2"], v) == pytest.approx(
        {"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6}
    )


def test_shapley_set_lookup_without_bitmasks_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = _random_stats(11)
    fast = attribute_paths(stats, ["shapley"])["shapley"]
    monkeypatch.setattr(attr.shapley, "_MAX_BITMASK_CHANNELS", 0)
    slow = attribute_paths(stats, ["shapley"])["shapley"]
    np.testing.assert_allclose(slow.conversions, fast.conversions, atol=1e-9)
    np.testing.assert_allclose(slow.value, fast.value, atol=1e-9)


# -- batch over path files -------------------------------------------------------------

SMALL = paths(
    "email > paid_search > direct,3,150,7\n"
    "paid_search > direct,1,40,9\n"
    "social > social > email,2,90,3\n"
    "direct,1,25,12\n"
)


def test_heuristic_totals_by_hand() -> None:
    got = {m: t.as_dict() for m, t in attribute_paths(SMALL, MODELS[:4]).items()}
    assert flat(got["first_touch"]) == approx_flat(
        {"email": (3, 150), "paid_search": (1, 40), "direct": (1, 25), "social": (2, 90)}
    )
    assert flat(got["last_touch"]) == approx_flat(
        {"email": (2, 90), "paid_search": (0, 0), "direct": (5, 215), "social": (0, 0)}
    )
    assert flat(got["last_non_direct"]) == approx_flat(
        {"email": (2, 90), "paid_search": (4, 190), "direct": (1, 25), "social": (0, 0)}
    )
    # linear: row 1 gives 1 each (50 each), row 2 1/2 each (20), row 3 social 4/3 (60) and
    # email 2/3 (30), row 4 direct 1 (25).
    assert flat(got["linear"]) == approx_flat(
        {
            "email": (1 + 2 / 3, 80),
            "paid_search": (1.5, 70),
            "direct": (2.5, 95),
            "social": (4 / 3, 60),
        }
    )


def test_position_and_time_decay_totals_by_hand() -> None:
    cfg = AttributionConfig(half_life_hours=24, touch_interval_hours=24)
    got = attribute_paths(SMALL, ["time_decay", "position_based"], cfg)
    # time_decay, one day apart with a one-day half-life: weights 1/4, 1/2, 1 -> /7 * 4,
    # 1/2, 1 -> 1/3, 2/3. Row 1 (3 conv): email 3/7, paid 6/7, direct 12/7.
    # Row 2: paid 1/3, direct 2/3. Row 3 (2 conv): social 2*(1/7+2/7), email 2*4/7. Row 4.
    assert flat(got["time_decay"].as_dict()) == approx_flat(
        {
            "email": (3 / 7 + 8 / 7, 150 / 7 + 90 * 4 / 7),
            "paid_search": (6 / 7 + 1 / 3, 300 / 7 + 40 / 3),
            "direct": (12 / 7 + 2 / 3 + 1, 600 / 7 + 80 / 3 + 25),
            "social": (6 / 7, 90 * 3 / 7),
        }
    )
    # position_based 40/20/40: row 1 0.4/0.2/0.4 x3, row 2 0.5/0.5, row 3 social
    # 0.4+0.2, email 0.4 (x2), row 4 direct 1.
    assert flat(got["position_based"].as_dict()) == approx_flat(
        {
            "email": (1.2 + 0.8, 60 + 36),
            "paid_search": (0.6 + 0.5, 30 + 20),
            "direct": (1.2 + 0.5 + 1, 60 + 20 + 25),
            "social": (1.2, 54),
        }
    )


def test_every_model_attributes_every_conversion() -> None:
    stats = _random_stats(7)
    for model, totals in attribute_paths(stats).items():
        assert totals.total_conversions == pytest.approx(stats.total_conversions), model
        assert totals.total_value == pytest.approx(stats.total_value), model
        assert np.all(totals.conversions >= -1e-12), model


def test_unknown_model_in_batch() -> None:
    with pytest.raises(AttributionError):
        attribute_paths(SMALL, ["lstm"])


# -- path files ------------------------------------------------------------------------


def test_parse_tolerates_spaces_bom_and_optional_columns() -> None:
    stats = parse_path_text("\ufeffpath , total_conversions\n a>b >  c ,2\n\n")
    assert list(stats.rows()) == [PathRow(("a", "b", "c"), 2.0, 0.0, 0.0)]
    # ChannelAttribution's own sample file separates columns with ";".
    semicolons = parse_path_text("path;total_conversions;total_null\na > b;1;3\n")
    assert list(semicolons.rows()) == [PathRow(("a", "b"), 1.0, 0.0, 3.0)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a > b,x,0,0\n", 2, "total_conversions"),
        ("a > b,1,0,0\na > > b,1,0,0\n", 3, "empty channel"),
        ("a,1,0,0\n,1,0,0\n", 3, "empty path"),
        ("a,1,0,-2\n", 2, "total_null"),
        ("a,1,nan,0\n", 2, "total_conversion_value"),
        ("a,1\n", 2, "columns"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(PathFileError) as info:
        parse_path_text(HEADER + text, "p.csv")
    assert str(info.value).startswith(f"p.csv:{line}: ")
    assert fragment in str(info.value)


def test_parse_header_errors() -> None:
    with pytest.raises(PathFileError, match=r"^p\.csv:1: missing column\(s\) total_conversions"):
        parse_path_text("path,conversions\na,1\n", "p.csv")
    with pytest.raises(PathFileError, match="empty file"):
        parse_path_text("", "p.csv")


def test_read_missing_file() -> None:
    with pytest.raises(PathFileError, match="cannot read"):
        read_path_file("/nonexistent/paths.csv")


def test_aggregate_journeys_and_write_round_trip() -> None:
    rows = aggregate_journeys(
        [
            (["email", "direct"], True, 20.0),
            (["email", "direct"], False, 0.0),
            ([" email ", "direct"], True, 5.5),
            (["sms"], False, 0.0),
            ([], True, 1.0),
        ]
    )
    assert rows == [
        PathRow(("email", "direct"), 2.0, 25.5, 1.0),
        PathRow(("sms",), 0.0, 0.0, 1.0),
    ]
    buffer = io.StringIO()
    write_path_file(rows, buffer)
    assert buffer.getvalue() == HEADER + "email > direct,2,25.5,1\nsms,0,0,1\n"
    assert list(parse_path_text(buffer.getvalue()).rows()) == rows


# -- properties ------------------------------------------------------------------------

CHANNELS = ("direct", "email", "sms", "paid_search")
RULE_FUNCS: dict[str, Callable[..., list[TouchCredit]]] = {
    "first_touch": first_touch,
    "last_touch": last_touch,
    "last_non_direct": last_non_direct,
    "linear": linear,
    "time_decay": time_decay,
    "position_based": position_based,
}

touch_lists = st.lists(
    st.tuples(st.sampled_from(CHANNELS), st.integers(min_value=0, max_value=24 * 60)),
    min_size=1,
    max_size=8,
).map(lambda spec: touches(*spec))
revenues = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
SNAPSHOTS: list[ChannelWeights | attr.ShapleyWeights] = [
    fit_markov(paths("email > sms,2,0,1\nsms,0,0,3\ndirect > paid_search,1,0,0\n")),
    fit_shapley(paths("email > sms,2,0,1\nsms,1,0,3\ndirect > paid_search,1,0,0\n")),
]


def _all_credits(ts: list[Touch], revenue: float) -> dict[str, list[TouchCredit]]:
    out = {m: attribute_conversion(m, ts, T0, revenue) for m in MODELS[:6]}
    for snap in SNAPSHOTS:
        out[snap.model] = attribute_conversion(snap.model, ts, T0, revenue, snapshot=snap)
    return out


@settings(max_examples=100, deadline=None)
@given(touch_lists, revenues)
def test_credits_sum_to_one_and_revenue_is_preserved(ts: list[Touch], revenue: float) -> None:
    for model, result in _all_credits(ts, revenue).items():
        assert len(result) == len(ts), model
        assert abs(sum(c.credit for c in result) - 1.0) <= 1e-9, model
        assert abs(sum(c.revenue_credit for c in result) - revenue) <= 1e-9 * max(1.0, revenue)
        assert all(c.credit >= 0 for c in result), model
        assert sorted(c.position for c in result) == list(range(len(ts)))


def _per_channel_and_time(
    result: Sequence[TouchCredit], ts: Sequence[Touch]
) -> dict[tuple[str, datetime], float]:
    out: dict[tuple[str, datetime], float] = {}
    for c, t in zip(result, ts, strict=True):
        out[(c.channel, t.at)] = out.get((c.channel, t.at), 0.0) + c.credit
    return out


@settings(max_examples=60, deadline=None)
@given(touch_lists, st.randoms(use_true_random=False))
def test_permuting_touches_changes_no_channel_credit(ts: list[Touch], rnd: random.Random) -> None:
    shuffled = list(ts)
    rnd.shuffle(shuffled)
    before, after = _all_credits(ts, 10.0), _all_credits(shuffled, 10.0)
    for model in MODELS:
        # Touches tied in time (same instant) are ordered by input position, so only
        # identical (channel, time) ties are interchangeable: compare per (channel, time).
        a = _per_channel_and_time(before[model], ts)
        b = _per_channel_and_time(after[model], shuffled)
        ties = len({t.at for t in ts}) < len({(t.channel, t.at) for t in ts})
        if model in {"first_touch", "last_touch", "last_non_direct", "position_based"} and ties:
            continue  # distinct channels at the same instant: input order decides
        assert a == pytest.approx(b, abs=1e-12), model


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(CHANNELS), st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
def test_single_channel_path_takes_all_credit(channel: str, hours: list[int]) -> None:
    ts = touches(*((channel, h) for h in hours))
    for model, result in _all_credits(ts, 5.0).items():
        assert by_channel(result) == pytest.approx({channel: 1.0}), model


path_rows = st.lists(
    st.tuples(
        st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=5),
        st.integers(0, 5),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=50, deadline=None)
@given(path_rows, st.integers(1, 3))
def test_data_driven_totals_sum_to_total_conversions(
    rows: list[tuple[list[str], int, int]], order: int
) -> None:
    stats = PathStats.from_rows(PathRow(tuple(p), c, 7.0 * c, n) for p, c, n in rows)
    cfg = AttributionConfig(markov_order=order)
    for model, totals in attribute_paths(stats, ["markov", "shapley"], cfg).items():
        assert totals.total_conversions == pytest.approx(stats.total_conversions, abs=1e-9), model
        assert totals.total_value == pytest.approx(stats.total_value, abs=1e-9), model
        assert np.all(totals.conversions >= 0), model


@settings(max_examples=60, deadline=None)
@given(path_rows)
def test_batch_rule_based_equals_sum_of_single_conversions(
    rows: list[tuple[list[str], int, int]],
) -> None:
    cfg = AttributionConfig(half_life_hours=30, touch_interval_hours=24)
    stats = PathStats.from_rows(PathRow(tuple(p), c, 3.0 * c, n) for p, c, n in rows)
    batch = attribute_paths(stats, MODELS[:6], cfg)
    for model in MODELS[:6]:
        expected: dict[str, float] = dict.fromkeys(stats.channels, 0.0)
        for row in stats.rows():
            n = len(row.channels)
            ts = touches(*((c, 24 * (n - 1 - i)) for i, c in enumerate(row.channels)))
            for c in attribute_conversion(model, ts, T0, config=cfg):
                expected[c.channel] += c.credit * row.conversions
        got = {ch: conv for ch, (conv, _) in batch[model].as_dict().items()}
        assert got == pytest.approx(expected, abs=1e-9), model
