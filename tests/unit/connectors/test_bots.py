"""Bots in `journeys generate`'s data: flagged by the Segment connector, kept out of the
journeys by counts_for_journeys, and what they do to Markov's credit when they are not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from connectors.base import Rejected
from connectors.evaluation import EVENTS_TRUTH, read_events_truth, source_files
from connectors.generate import generate
from connectors.registry import SOURCES
from connectors.replay import replay_files
from connectors.useragents import describe
from pipeline.core.attribution import ChannelWeights, fit_markov
from pipeline.core.eligibility import counts_for_journeys
from pipeline.core.journeys import ClosedJourney, JourneyBuilder, JourneyState
from pipeline.core.model import Touchpoint, to_millis
from pipeline.core.paths import PathStats, aggregate_journeys


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Touchpoint], dict[str, str]]:
    """Every touchpoint of a generated sample, and its true owner by event id."""
    folder = tmp_path_factory.mktemp("bots")
    generate(folder, people=120, days=21, seed=11, malformed_share=0.0)
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejected] = []
    for name, path in source_files(folder):
        replay_files([path], SOURCES[name], touchpoints.append, rejected.append)
    assert rejected == []
    truth = read_events_truth(folder / EVENTS_TRUTH)
    owner = {
        tp.event_id: truth[(tp.source, tp.source_event_id or "")]
        for tp in touchpoints
        if (tp.source, tp.source_event_id or "") in truth
    }
    return touchpoints, owner


def journeys(
    touchpoints: list[Touchpoint], owner: dict[str, str], keep: Callable[[Touchpoint], bool]
) -> list[ClosedJourney]:
    """The closed journeys of the kept touchpoints, each person its true owner, replayed
    in event time and expired at the end, as the journey stage would build them."""
    builder = JourneyBuilder()
    states: dict[str, JourneyState] = {}
    closed: list[ClosedJourney] = []
    ordered = sorted(touchpoints, key=lambda t: (t.occurred_at, t.event_id))
    for tp in ordered:
        person = owner.get(tp.event_id)
        if person is None or not keep(tp):
            continue
        result = builder.apply(
            states.get(person), tp.with_person(person), to_millis(tp.occurred_at)
        )
        states[person] = result.state
        closed.extend(result.closed)
    end = to_millis(ordered[-1].occurred_at + timedelta(days=400))
    for state in states.values():
        closed.extend(builder.expire(state, end)[1])
    return closed


def markov(closed: list[ClosedJourney]) -> ChannelWeights:
    rows = aggregate_journeys((j.path, j.converted, j.revenue) for j in closed)
    return fit_markov(PathStats.from_rows(rows))


def test_every_bot_is_flagged_and_no_visitor_is(
    sample: tuple[list[Touchpoint], dict[str, str]],
) -> None:
    touchpoints, owner = sample
    bots = [tp for tp in touchpoints if owner.get(tp.event_id, "").startswith("bot-")]
    people = [tp for tp in touchpoints if not owner.get(tp.event_id, "").startswith("bot-")]
    assert len({owner[tp.event_id] for tp in bots}) >= 2
    assert all(tp.is_bot for tp in bots)
    assert not any(tp.is_bot for tp in people)
    assert {tp.device_type for tp in bots} == {"bot"}
    assert {tp.device_type for tp in people if tp.source == "segment"} >= {"desktop", "mobile"}


def test_bots_make_no_journey_when_only_what_counts_is_kept(
    sample: tuple[list[Touchpoint], dict[str, str]],
) -> None:
    touchpoints, owner = sample
    everything = journeys(touchpoints, owner, lambda tp: True)
    counted = journeys(
        touchpoints, owner, lambda tp: counts_for_journeys(tp.to_record(), frozenset())
    )
    assert any(j.person_id.startswith("bot-") for j in everything), "the sample has bot journeys"
    assert not any(j.person_id.startswith("bot-") for j in counted)
    # Nobody else loses a journey: the filter takes bots only.
    humans = [j for j in everything if not j.person_id.startswith("bot-")]
    assert sorted(j.journey_id for j in humans) == sorted(j.journey_id for j in counted)


def test_bots_shift_markov_credit_and_leaving_them_out_undoes_it(
    sample: tuple[list[Touchpoint], dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    touchpoints, owner = sample
    with_bots = markov(journeys(touchpoints, owner, lambda tp: True))
    without = markov(
        journeys(touchpoints, owner, lambda tp: counts_for_journeys(tp.to_record(), frozenset()))
    )
    channels = sorted(set(with_bots.weights) | set(without.weights))
    with capsys.disabled():
        print("\nMarkov credit      with bots   without bots")
        for c in channels:
            print(f"{c:18s} {with_bots.weights.get(c, 0):10.4f} {without.weights.get(c, 0):12.4f}")
        print(
            f"P(conversion)      {with_bots.conversion_probability:10.4f} "
            f"{without.conversion_probability:12.4f}"
        )
    # Bots' page views are non-converting direct sessions: they lower the chance that a
    # journey converts and move credit between channels.
    assert with_bots.conversion_probability < without.conversion_probability
    shift = max(abs(with_bots.weights.get(c, 0) - without.weights.get(c, 0)) for c in channels)
    assert shift > 0.005, shift


def test_user_agents_of_devices_that_substring_checks_got_wrong() -> None:
    cases = {
        # an Android tablet has no "Mobile" token and no "tablet" word
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36": "tablet",
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36": "tv",
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/13.0 Safari/605.1.15": "console",
        # Instagram's in-app browser on a phone
        "Mozilla/5.0 (Linux; Android 13; SM-S911B Build/TP1A.220624.014; wv) AppleWebKit/"
        "537.36 (KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile Safari/537.36 "
        "Instagram 308.0.0.36.109 Android": "mobile",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.0 Safari/605.1.15": "desktop",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": "bot",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36": "bot",
    }
    assert {ua: describe(ua).device_type for ua in cases} == cases
    assert describe("Mozilla/5.0 (compatible; Googlebot/2.1)").is_bot
    assert not describe("analytics-kotlin/1.15.0").is_bot
    assert describe("analytics-kotlin/1.15.0").device_type is None
