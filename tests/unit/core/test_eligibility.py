"""counts_for_journeys: bots and events without a required consent category are out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.eligibility import counts_for_journeys
from pipeline.core.model import Touchpoint
from pipeline.settings import Settings

NOW = datetime(2026, 10, 1, tzinfo=UTC)


def record(**fields: Any) -> dict[str, Any]:
    tp = Touchpoint("e-1", "segment", "m-1", NOW, NOW, "direct", "page_view", **fields)
    return tp.to_record()


def test_a_visitor_counts_and_a_bot_does_not() -> None:
    assert counts_for_journeys(record(), frozenset())
    assert not counts_for_journeys(record(is_bot=True), frozenset())
    assert not counts_for_journeys(record(is_bot=True, consent={"Analytics": True}), frozenset())


def test_required_consent_must_be_granted() -> None:
    need = frozenset({"Analytics", "Advertising"})
    assert counts_for_journeys(record(consent={"Analytics": True, "Advertising": True}), need)
    assert not counts_for_journeys(record(consent={"Analytics": True}), need)
    assert not counts_for_journeys(record(consent={"Analytics": True, "Advertising": False}), need)
    # Saying nothing about consent grants nothing.
    assert not counts_for_journeys(record(), need)
    # No requirement: consent is not looked at, not even a refusal.
    assert counts_for_journeys(record(consent={"Analytics": False}), frozenset())


def test_records_written_before_the_flags_existed_count() -> None:
    old = record()
    del old["is_bot"], old["consent"]
    assert counts_for_journeys(old, frozenset())


@given(
    consent=st.none() | st.dictionaries(st.sampled_from("ABCD"), st.booleans()),
    need=st.frozensets(st.sampled_from("ABCD")),
    bot=st.booleans(),
)
def test_it_is_exactly_not_a_bot_and_every_category_granted(
    consent: dict[str, bool] | None, need: frozenset[str], bot: bool
) -> None:
    granted = {c for c, ok in (consent or {}).items() if ok}
    expected = not bot and (not need or need <= granted) and (not need or consent is not None)
    assert counts_for_journeys(record(is_bot=bot, consent=consent), need) == expected


def test_the_setting_is_a_comma_separated_list(monkeypatch: Any) -> None:
    monkeypatch.setenv("JOURNEYS_REQUIRED_CONSENT", " Analytics, C0004 ,,")
    assert Settings().required_consent_categories() == frozenset({"Analytics", "C0004"})
    monkeypatch.delenv("JOURNEYS_REQUIRED_CONSENT")
    assert Settings().required_consent_categories() == frozenset()
