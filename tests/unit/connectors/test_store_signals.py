"""QR-code scans and in-store Wi-Fi logins (the documented CSV/JSONL) map to store
touchpoints that keep the signal, and profiles count them."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.registry import get_source
from connectors.replay import replay_files
from connectors.store_signals import COLUMNS, StoreSignalsSource
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex
from pipeline.core.profiles import classify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "store_signals"
NOW = datetime(2026, 10, 1, tzinfo=UTC)


def test_the_example_file_has_the_documented_columns() -> None:
    with (FIXTURES / "signals.csv").open(newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS


def test_scans_and_logins_are_store_touchpoints_that_keep_the_signal() -> None:
    out: list[Touchpoint] = []
    stats = replay_files([FIXTURES / "signals.csv"], get_source("store_signals"), out.append,
                         lambda r: None)  # fmt: skip
    assert (stats.records, stats.rejected) == (4, 0)
    scan, login, app_scan, phone_login = out
    assert (scan.channel, scan.event_type, scan.store_id) == ("store", "store_visit", "NYC-05")
    assert scan.properties == {"signal": "qr_scan", "signal_id": "Q-000101",
                               "qr_code": "spring-sale"}  # fmt: skip
    assert scan.event_id == event_id_for("store_signals", "NYC-05:Q-000101")
    assert scan.occurred_at == datetime(2026, 9, 29, 18, 12, 5, tzinfo=UTC)
    assert [(i.type, i.value) for i in login.identifiers] == [
        ("email_sha256", sha256_hex("bob.norman@example.com"))
    ]
    assert app_scan.properties["signal"] == "qr_scan"  # "qr-scan" normalised
    assert phone_login.identifiers[0].type == "phone_sha256"
    kinds = [classify(tp.with_person("p")) for tp in out]
    assert [k.kind if k else None for k in kinds] == ["qr_scan", "wifi_login", "qr_scan",
                                                      "wifi_login"]  # fmt: skip


def test_the_jsonl_file_reads_the_same() -> None:
    out: list[Touchpoint] = []
    replay_files([FIXTURES / "signals.jsonl"], StoreSignalsSource(), out.append, lambda r: None)
    assert [tp.properties["signal"] for tp in out] == ["qr_scan", "wifi_login"]


def test_bad_rows_are_dead_letters_naming_the_field() -> None:
    rejected: list[str] = []
    replay_files([FIXTURES / "bad.csv"], StoreSignalsSource(), lambda tp: None,
                 lambda r: rejected.append(r.error))  # fmt: skip
    assert len(rejected) == 3
    assert rejected[0].startswith("signal:")
    assert rejected[1].startswith("loyalty_id:")
    assert rejected[2].startswith("signal_id:")


def test_the_collector_takes_store_signals_with_the_write_key() -> None:
    from tests.unit.connectors.test_collector import DEV, FakeStore, post, run

    items = [json.loads(line) for line in (FIXTURES / "signals.jsonl").read_text().splitlines()]
    store = FakeStore()

    async def scenario(client: Any) -> list[tuple[int, Any]]:
        return [
            await post(client, "/webhooks/store-signals", items, DEV),
            await post(client, "/webhooks/store-signals", {**items[0], "signal": "door"}, DEV),
            await post(client, "/webhooks/store-signals", items[0]),
        ]

    answers = run(scenario, store)
    assert [status for status, _ in answers] == [200, 400, 401]
    assert answers[1][1]["field"] == "signal"
    assert [tp.properties["signal"] for tp in store.touchpoints] == ["qr_scan", "wifi_login"]
    assert {r.source for r in store.rejected} == {"store_signals"}
