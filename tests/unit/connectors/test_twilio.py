"""Twilio status callbacks, inbound messages and link clicks map to SMS touchpoints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError
from connectors.registry import get_source
from connectors.replay import replay_files
from connectors.twilio import TwilioSource
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "twilio"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = TwilioSource()
CUSTOMER = sha256_hex("+14155550134")
SID = "SM1342fe1b2c904d1ab04f0fc7a58abca9"


def records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "callbacks.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_status_callbacks_become_sms_status_events() -> None:
    tps = [tp for rec in records()[:5] for tp in SOURCE.map(rec, NOW)]
    assert [tp.event_type for tp in tps] == [
        "sms_sent",
        "sms_delivered",
        "sms_undelivered",
        "sms_failed",
        "sms_read",
    ]
    assert {tp.channel for tp in tps} == {"sms"}
    sent, delivered = tps[0], tps[1]
    # one message, several statuses: the status is part of the source id
    assert sent.source_event_id == f"{SID}:sent"
    assert sent.event_id == event_id_for("twilio", f"{SID}:sent")
    assert delivered.event_id == event_id_for("twilio", f"{SID}:delivered")
    assert sent.event_id != delivered.event_id
    # the customer of an outbound message is To, not our own From number
    assert sent.identifiers[0].type == "phone_sha256"
    assert sent.identifier("phone_sha256") == CUSTOMER
    assert sent.occurred_at == datetime(2026, 9, 27, 10, 0, 2, tzinfo=UTC)
    assert delivered.properties["dlr_done_date"] == "2609271000"
    assert tps[2].properties["error_code"] == "30003"


def test_whatsapp_addresses_are_phones_behind_a_prefix() -> None:
    (tp,) = SOURCE.map(records()[4], NOW)
    assert tp.identifier("phone_sha256") == sha256_hex("+447700900123")
    assert tp.properties["address_prefix"] == "whatsapp"


def test_a_non_phone_channel_address_gives_no_identifier() -> None:
    rec = dict(records()[0], To="messenger:1234567")
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.identifiers == ()


def test_an_inbound_message_is_keyed_by_its_sender_and_drops_the_body() -> None:
    (tp,) = SOURCE.map(records()[5], NOW)
    assert tp.event_type == "sms_inbound"
    assert tp.channel == "sms"
    assert tp.source_event_id == "SMbe794ce78f6b9fdf853d2acb76c080db"
    assert tp.identifier("phone_sha256") == CUSTOMER
    assert tp.properties["direction"] == "inbound"
    text = repr(tp.to_record())
    assert "STOP" not in text and "415 555" not in text and "4155550134" not in text


def test_a_link_click_is_an_sms_click_with_the_link_campaign() -> None:
    (tp,) = SOURCE.map(records()[6], NOW)
    assert tp.event_type == "sms_click"
    assert tp.channel == "sms"
    assert tp.event_id == event_id_for("twilio", "NO00000000000000000000000001")
    assert tp.occurred_at == datetime(2026, 9, 27, 10, 10, tzinfo=UTC)
    assert tp.identifier("phone_sha256") == CUSTOMER
    assert tp.campaign is not None
    assert (tp.campaign.source, tp.campaign.medium, tp.campaign.name) == (
        "twilio",
        "sms",
        "autumn_sale",
    )


def test_without_a_timestamp_the_event_time_is_the_receipt_time() -> None:
    rec = {k: v for k, v in records()[0].items() if k != "Timestamp"}
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.occurred_at == NOW
    (again,) = SOURCE.map(rec, datetime(2027, 1, 1, tzinfo=UTC))
    assert again.event_id == tp.event_id


def test_no_raw_phone_survives() -> None:
    text = repr([tp.to_record() for rec in records() for tp in SOURCE.map(rec, NOW)])
    assert "4155550134" not in text
    assert "+44" not in text


BAD = ["MessageSid", "MessageStatus", "Timestamp", "To", "MessageStatus", "type", "data.click_time"]


@pytest.mark.parametrize(("lineno", "field"), list(enumerate(BAD, start=1)))
def test_bad_requests_name_their_field(lineno: int, field: str) -> None:
    line = (FIXTURES / "bad.jsonl").read_text().splitlines()[lineno - 1]
    with pytest.raises(FieldError) as err:
        SOURCE.map(json.loads(line), NOW)
    assert err.value.field == field


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "callbacks.jsonl", FIXTURES / "bad.jsonl"]
    stats = replay_files(paths, get_source("twilio"), tps.append, rejected.append)
    assert stats.records == 14
    assert (len(tps), len(rejected)) == (7, 7)
    assert len(tps) + len(rejected) == stats.records
    assert rejected[0].location.endswith("bad.jsonl:1")
