"""Chat and call-centre interactions (generic JSONL) map to chat / call touches."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError, content_id
from connectors.interactions import InteractionsSource
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "interactions"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = InteractionsSource()


def records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "interactions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_chat_is_a_chat_touch() -> None:
    (tp,) = SOURCE.map(records()[0], NOW)
    assert (tp.event_type, tp.channel) == ("chat", "chat")
    assert tp.event_id == event_id_for("interactions", "chat-20260927-0042")
    assert tp.occurred_at == datetime(2026, 9, 27, 10, 2, 11, tzinfo=UTC)
    assert tp.identifier("email_sha256") == sha256_hex("ana.customer@example.com")
    assert tp.identifier("anonymous_id") == "anon-7f3e"
    assert tp.properties["duration_s"] == "449"
    assert tp.properties["queue"] == "orders"
    # the transcript is never read
    assert "transcript" not in repr(tp.to_record())


def test_a_call_is_a_call_centre_touch() -> None:
    (tp,) = SOURCE.map(records()[1], NOW)
    assert (tp.event_type, tp.channel) == ("call", "call_center")
    assert tp.identifier("phone_sha256") == sha256_hex("+14155550134")
    assert tp.identifier("loyalty_id") == "LOY-88231"
    assert tp.properties["duration_s"] == "312"


def test_an_interaction_without_an_id_gets_a_content_hash() -> None:
    rec = records()[2]
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.source_event_id == content_id(rec)
    assert SOURCE.map(rec, NOW)[0].event_id == tp.event_id


def test_no_raw_pii_survives() -> None:
    text = repr([SOURCE.map(r, NOW)[0].to_record() for r in records()])
    assert "example.com" not in text and "4155550134" not in text


BAD = [
    "type",
    "started_at",
    "customer",
    "customer",
    "customer.email",
    "customer.phone",
    "ended_at",
    "direction",
]


@pytest.mark.parametrize(("lineno", "field"), list(enumerate(BAD, start=1)))
def test_bad_interactions_name_their_field(lineno: int, field: str) -> None:
    line = (FIXTURES / "bad.jsonl").read_text().splitlines()[lineno - 1]
    with pytest.raises(FieldError) as err:
        SOURCE.map(json.loads(line), NOW)
    assert err.value.field == field


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "interactions.jsonl", FIXTURES / "bad.jsonl"]
    stats = replay_files(paths, get_source("interactions"), tps.append, rejected.append)
    assert stats.records == 11
    assert (len(tps), len(rejected)) == (3, 8)
