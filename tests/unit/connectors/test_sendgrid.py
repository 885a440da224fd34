"""SendGrid Event Webhook events map to e-mail touchpoints; bad ones name their field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError
from connectors.registry import get_source
from connectors.replay import replay_files
from connectors.sendgrid import SendGridSource
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sendgrid"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = SendGridSource()
ANA = sha256_hex("ana.customer@example.com")


def batch() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / "webhook_batch.json").read_text())
    return data


def test_the_webhook_array_maps_one_touchpoint_per_event() -> None:
    events = batch()
    tps = SOURCE.map_array(events, NOW)
    assert [tp.event_type for tp in tps] == [
        "email_processed",
        "email_deferred",
        "email_delivered",
        "email_open",
        "email_click",
        "email_bounce",
        "email_dropped",
        "email_spamreport",
        "email_unsubscribe",
        "email_group_unsubscribe",
    ]
    for tp, event in zip(tps, events, strict=True):
        assert tp.source == "sendgrid"
        assert tp.channel == "email"
        assert tp.source_event_id == event["sg_event_id"]
        assert tp.event_id == event_id_for("sendgrid", event["sg_event_id"])
        assert tp.occurred_at == datetime.fromtimestamp(event["timestamp"], tz=UTC)
        assert tp.received_at == NOW
        assert tp.identifier("email_sha256") == sha256_hex(event["email"])
        assert tp.revenue is None


def test_event_ids_are_deterministic() -> None:
    first = SOURCE.map_array(batch(), NOW)
    again = SOURCE.map_array(batch(), datetime(2027, 1, 1, tzinfo=UTC))
    assert [t.event_id for t in first] == [t.event_id for t in again]
    assert len({t.event_id for t in first}) == len(first)


def test_a_click_takes_its_campaign_from_the_clicked_url() -> None:
    click = batch()[4]
    (tp,) = SOURCE.map(click, NOW)
    assert tp.event_type == "email_click"
    assert tp.campaign is not None
    assert tp.campaign.source == "newsletter"
    assert tp.campaign.medium == "email"
    assert tp.campaign.name == "autumn_sale"
    assert tp.campaign.content == "hero"
    assert tp.identifier("email_sha256") == ANA
    assert tp.identifier("user_id") == "cust-1001"  # a custom argument set at send time
    assert tp.properties["category"] == "autumn sale,newsletter"
    assert tp.properties["marketing_campaign_id"] == "12345"
    # the clicked URL quoted the address: it is kept only redacted
    assert "ana.customer@example.com" not in tp.properties["url"]
    assert f"<email:sha256:{ANA}>" in tp.properties["url"]


def test_without_a_url_the_campaign_is_the_marketing_campaign_or_category() -> None:
    (tp,) = SOURCE.map(batch()[0], NOW)
    assert tp.campaign is not None
    assert (tp.campaign.source, tp.campaign.medium, tp.campaign.name) == (
        "sendgrid",
        "email",
        "autumn sale",
    )
    named = dict(batch()[0], marketing_campaign_name="Autumn Sale 2026")
    (tp,) = SOURCE.map(named, NOW)
    assert tp.campaign is not None and tp.campaign.name == "Autumn Sale 2026"


def test_bounce_details_are_kept_redacted() -> None:
    (tp,) = SOURCE.map(batch()[5], NOW)
    assert tp.properties["bounce_type"] == "bounce"
    assert tp.properties["bounce_classification"] == "invalid"
    assert "bo.customer@example.com" not in tp.properties["reason"]
    assert tp.properties["reason"].endswith("Recipient address rejected")


def test_no_raw_email_survives_anywhere() -> None:
    text = repr([tp.to_record() for tp in SOURCE.map_array(batch(), NOW)])
    assert "@example.com" not in text


BAD = [
    "sg_event_id",
    "timestamp",
    "event",
    "email",
    "email",
    "category",
    "event",
]


@pytest.mark.parametrize(("lineno", "field"), list(enumerate(BAD, start=1)))
def test_bad_events_name_their_field(lineno: int, field: str) -> None:
    line = (FIXTURES / "bad.jsonl").read_text().splitlines()[lineno - 1]
    with pytest.raises(FieldError) as err:
        SOURCE.map(json.loads(line), NOW)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_a_bad_event_in_an_array_is_named_by_index() -> None:
    events = batch()
    del events[3]["sg_event_id"]
    with pytest.raises(FieldError) as err:
        SOURCE.map_array(events, NOW)
    assert err.value.field == "[3].sg_event_id"


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "events.jsonl", FIXTURES / "bad.jsonl"]
    stats = replay_files(paths, get_source("sendgrid"), tps.append, rejected.append)
    assert stats.records == 18
    assert len(tps) == stats.touchpoints == 10
    assert len(rejected) == stats.rejected == 8
    assert len(tps) + len(rejected) == stats.records
    assert rejected[0].location.endswith("bad.jsonl:1")
    assert rejected[0].error == "sg_event_id: required"
    assert rejected[-1].location.endswith("bad.jsonl:8")
    assert "invalid JSON" in rejected[-1].error


def test_replay_reads_a_whole_webhook_array_on_one_line(tmp_path: Path) -> None:
    events = json.loads((FIXTURES / "webhook_batch.json").read_text())
    log = tmp_path / "sendgrid.jsonl"
    log.write_text(json.dumps(events) + "\n" + json.dumps(events[0]) + "\n")
    good: list[object] = []
    bad: list[object] = []
    stats = replay_files([log], SOURCE, good.append, bad.append)
    assert (len(good), len(bad), stats.records) == (len(events) + 1, 0, 2)
