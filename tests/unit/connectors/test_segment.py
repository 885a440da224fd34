"""Segment Spec messages map to canonical touchpoints; bad ones name their field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError, map_record
from connectors.segment import SegmentSource
from pipeline.core.model import event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "segment"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
SOURCE = SegmentSource()


def common() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "common_fields.json").read_text())
    return data


def test_the_spec_example_maps_to_a_touchpoint() -> None:
    (tp,) = SOURCE.map(common(), NOW)
    assert tp.event_id == event_id_for("segment", "022bb90c-bbac-11e4-8dfc-aa07a5b093db")
    assert tp.occurred_at == datetime(2015, 12, 10, 4, 8, 31, 905000, tzinfo=UTC)
    assert tp.event_type == "order_completed"
    assert tp.channel == "email"  # utm medium=email in context.campaign
    assert tp.campaign is not None and tp.campaign.name == "TPS Innovation Newsletter"
    assert tp.revenue == 25.0 and tp.currency == "USD"
    assert tp.order_id == "50314b8e9bcf000000000000"
    assert tp.device_type == "mobile"
    ids = {i.type: i.value for i in tp.identifiers}
    assert ids["user_id"] == "97980cfea0067"
    assert ids["anonymous_id"] == "507f191e810c19729de860ea"
    assert ids["device_id"] == "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"
    assert ids["email_sha256"] == sha256_hex("peter@example.com")
    assert ids["phone_sha256"] == sha256_hex("+14155550134")


def test_no_raw_pii_survives() -> None:
    (tp,) = SOURCE.map(common(), NOW)
    text = repr(tp.to_record())
    assert "example.com" not in text.lower()
    assert "555" not in text


def test_page_with_google_referrer_is_organic_search() -> None:
    msg = {
        "type": "page",
        "anonymousId": "a1",
        "timestamp": "2026-10-01T10:00:00Z",
        "context": {
            "page": {"url": "https://shop.example.com/", "referrer": "https://www.google.com/"}
        },
    }
    (tp,) = SOURCE.map(msg, NOW)
    assert (tp.event_type, tp.channel) == ("page_view", "organic_search")
    assert tp.source_event_id is not None and tp.source_event_id.startswith("sha1:")
    assert SOURCE.map(msg, NOW)[0].event_id == tp.event_id  # content id is deterministic


def test_gclid_in_the_url_is_paid_search() -> None:
    msg = {
        "type": "page",
        "anonymousId": "a1",
        "messageId": "m1",
        "timestamp": "2026-10-01T10:00:00Z",
        "context": {"page": {"url": "https://shop.example.com/?gclid=abc123"}},
    }
    (tp,) = SOURCE.map(msg, NOW)
    assert tp.channel == "paid_search"
    assert tp.campaign is not None and tp.campaign.click_id == "gclid:abc123"


def test_alias_links_previous_id() -> None:
    msg = {
        "type": "alias",
        "userId": "u-9",
        "previousId": "anon-9",
        "messageId": "m2",
        "timestamp": "2026-10-01T10:00:00Z",
    }
    (tp,) = SOURCE.map(msg, NOW)
    assert {(i.type, i.value) for i in tp.identifiers} == {
        ("user_id", "u-9"),
        ("anonymous_id", "anon-9"),
    }


def test_batch_maps_every_message() -> None:
    one = common()
    two = {**common(), "messageId": "other", "type": "identify"}
    out = SOURCE.map({"batch": [one, two]}, NOW)
    assert [t.event_type for t in out] == ["order_completed", "identify"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "purchase"}, "type"),
        ({"timestamp": "yesterday", "originalTimestamp": None, "sentAt": None}, "timestamp"),
        ({"userId": None, "anonymousId": None}, "userId"),
        ({"event": None}, "event"),
        ({"properties": {"revenue": "lots"}}, "properties.revenue"),
        ({"properties": ["x"]}, "properties"),
        ({"userId": {"nested": 1}}, "userId"),
        ({"context": {"traits": {"email": "not-an-address"}}}, "context.traits.email"),
        ({"messageId": "x" * 300}, "messageId"),
    ],
)
def test_bad_messages_name_their_field(change: dict[str, Any], field: str) -> None:
    msg = {**common(), **change}
    with pytest.raises(FieldError) as err:
        SOURCE.map(msg, NOW)
    assert err.value.field == field


def test_bad_batch_item_names_its_index() -> None:
    with pytest.raises(FieldError) as err:
        SOURCE.map({"batch": [common(), {**common(), "type": "nope"}]}, NOW)
    assert err.value.field == "batch[1].type"


def test_map_record_turns_errors_into_values() -> None:
    mapped = map_record(SOURCE, ["not", "an", "object"], b"[...]", NOW, "f.jsonl:3")
    assert mapped.touchpoints == []
    assert mapped.rejected is not None
    assert mapped.rejected.location == "f.jsonl:3"
    assert "expected a JSON object" in mapped.rejected.error


def test_a_message_without_any_timestamp_happened_when_received() -> None:
    msg = {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m9"}
    (tp,) = SOURCE.map(msg, NOW)
    assert tp.occurred_at == NOW
