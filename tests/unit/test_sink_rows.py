"""The ClickHouse row of a Journey record (sinks.clickhouse.journey_row): one source and
one device per touch, whichever schema version wrote the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.core.journeys import ClosedJourney, Touch
from sinks.clickhouse import JOURNEYS, journey_row

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _record() -> dict[str, Any]:
    touches = (
        Touch("email", T0, "e1", kind="touch", source="sendgrid"),
        Touch("organic_search", T0 + timedelta(hours=1), "s1", kind="session",
              source="segment", device="mobile"),
    )  # fmt: skip
    journey = ClosedJourney(
        "j", "p", T0, T0 + timedelta(hours=2), True, "o1", 12.5, touches,
        conversion_event_type="store_purchase",
    )  # fmt: skip
    return journey.to_record()


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(JOURNEYS.columns, journey_row(rec, 0, 0, T0), strict=True))


def test_a_journey_row_carries_each_touch_source_and_device() -> None:
    row = _row(_record())
    assert row["path"] == ["email", "organic_search"]
    assert row["touch_sources"] == ["sendgrid", "segment"]
    assert row["touch_devices"] == ["", "mobile"]
    assert (row["conversion_event_type"], row["conversion_device"]) == ("store_purchase", "")


def test_a_record_of_an_older_writer_gets_one_empty_entry_per_touch() -> None:
    old = {
        k: v
        for k, v in _record().items()
        if k not in ("touch_sources", "touch_devices", "conversion_event_type", "conversion_device")
    }
    row = _row(old)
    assert row["touch_sources"] == row["touch_devices"] == ["", ""]
    assert (row["conversion_event_type"], row["conversion_device"]) == ("", "")
    bad = {**_record(), "touch_sources": ["a", "b", "c"]}  # never longer than the path
    assert _row(bad)["touch_sources"] == ["a", "b"]
