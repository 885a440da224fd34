"""Store transactions (the documented POS CSV) map to store touchpoints."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError
from connectors.pos import COLUMNS, PosSource
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pos"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = PosSource()


def rows(name: str) -> list[dict[str, str]]:
    with (FIXTURES / name).open(newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]


def test_the_example_file_has_the_documented_columns() -> None:
    with (FIXTURES / "transactions.csv").open(newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS


def test_a_purchase_is_a_store_purchase_with_hashed_identifiers() -> None:
    (tp,) = SOURCE.map(rows("transactions.csv")[0], NOW)
    assert tp.event_type == "store_purchase"
    assert tp.channel == "store"
    assert tp.store_id == "NYC-05"
    assert tp.source_event_id == "NYC-05:T-000187"
    assert tp.event_id == event_id_for("pos", "NYC-05:T-000187")
    assert tp.order_id == "NYC-05:T-000187"
    assert tp.revenue == 59.9 and tp.currency == "USD"
    assert tp.occurred_at == datetime(2026, 9, 29, 18, 30, tzinfo=UTC)
    assert tp.identifier("loyalty_id") == "LOY-88231"
    assert tp.identifier("email_sha256") == sha256_hex("bob.norman@example.com")
    assert tp.identifier("phone_sha256") == sha256_hex("+16135552222")
    assert tp.properties == {
        "transaction_id": "T-000187",
        "type": "purchase",
        "register_id": "R2",
        "items": "3",
    }


def test_types_currencies_and_times() -> None:
    tps = [SOURCE.map(r, NOW)[0] for r in rows("transactions.csv")]
    assert [t.event_type for t in tps] == [
        "store_purchase",
        "store_purchase",
        "store_return",
        "store_visit",
        "store_purchase",
    ]
    assert tps[1].currency == "USD" and tps[1].identifiers == ()
    assert tps[2].revenue == -19.95
    assert tps[2].occurred_at == datetime(2026, 9, 29, 16, 10, tzinfo=UTC)  # no offset: UTC
    assert tps[3].revenue is None and tps[3].order_id is None
    assert tps[3].occurred_at == datetime.fromtimestamp(1790700000, tz=UTC)
    assert tps[3].identifier("user_id") == "cust-1001"
    # a junk phone does not cost the store its sale
    assert tps[4].revenue == 80.0
    assert tps[4].identifier("email_sha256") == sha256_hex("ana.customer@example.com")
    assert tps[4].properties["invalid_identifiers"] == "phone"


def test_no_raw_pii_survives() -> None:
    text = repr([SOURCE.map(r, NOW)[0].to_record() for r in rows("transactions.csv")])
    assert "example.com" not in text.lower()
    assert "555 2222" not in text and "6135552222" not in text


BAD = ["transaction_id", "timestamp", "store_id", "type", "total", "total", "currency"]


@pytest.mark.parametrize(("index", "field"), list(enumerate(BAD)))
def test_bad_rows_name_their_field(index: int, field: str) -> None:
    with pytest.raises(FieldError) as err:
        SOURCE.map(rows("bad.csv")[index], NOW)
    assert err.value.field == field


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "transactions.csv", FIXTURES / "bad.csv"]
    stats = replay_files(paths, get_source("pos"), tps.append, rejected.append)
    assert stats.records == 13
    assert (len(tps), len(rejected)) == (5, 8)
    assert rejected[0].location.endswith("bad.csv:2")
    assert rejected[-1].error == "expected 12 columns, got 5"
