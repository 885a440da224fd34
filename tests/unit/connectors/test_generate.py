"""``connectors.generate``: every generated file replays cleanly through its own source."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import Rejected
from connectors.generate import generate
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.core.model import Touchpoint
from pipeline.core.pii import hash_email

END = datetime(2026, 11, 1, tzinfo=UTC)
FILES = (
    "segment.jsonl",
    "sendgrid.jsonl",
    "twilio.jsonl",
    "shopify.jsonl",
    "pos.csv",
    "ads.csv",
    "interactions.jsonl",
)


def _replay(path: Path) -> tuple[list[Touchpoint], list[Rejected], int]:
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejected] = []
    stats = replay_files(
        [path], get_source(path.name.split(".")[0]), touchpoints.append, rejected.append
    )
    assert stats.touchpoints == len(touchpoints)
    assert stats.rejected == len(rejected)
    return touchpoints, rejected, stats.records


@pytest.mark.parametrize("share", [0.05, 0.0])
def test_every_file_replays_with_its_source_and_accounts_for_every_record(
    tmp_path: Path, share: float
) -> None:
    stats = generate(tmp_path, people=40, days=10, seed=1, end=END, malformed_share=share)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == set(FILES)
    assert manifest["files"] == stats.files
    for name in FILES:
        touchpoints, rejected, records = _replay(tmp_path / name)
        assert records == manifest["files"][name], name
        assert touchpoints, f"{name}: no touchpoint"
        # one record per touchpoint (no array lines are generated) or per dead letter
        assert len(touchpoints) + len(rejected) == records, name
        assert len(rejected) == manifest["malformed_by_file"][name], name
        if share > 0:
            assert rejected, f"{name}: no dead letter"
        else:
            assert not rejected, f"{name}: {rejected[0].error}"
        for tp in touchpoints:
            assert END - timedelta(days=10) <= tp.occurred_at <= END, name


def test_files_are_time_ordered_and_cover_every_kind_of_record(tmp_path: Path) -> None:
    generate(tmp_path, people=80, days=14, seed=5, end=END, malformed_share=0.0)
    event_types: set[str] = set()
    for name in FILES:
        touchpoints, _, _ = _replay(tmp_path / name)
        times = [tp.occurred_at for tp in touchpoints]
        assert times == sorted(times), name
        event_types |= {tp.event_type for tp in touchpoints}
    assert {"email_delivered", "email_open", "email_click", "sms_delivered", "sms_click"} <= (
        event_types
    )
    assert {"purchase", "store_purchase", "ad_click", "chat", "call"} <= event_types
    shopify, _, _ = _replay(tmp_path / "shopify.jsonl")
    assert any(tp.store_id for tp in shopify if tp.event_type == "store_purchase")
    clicks = [
        tp for tp in _replay(tmp_path / "sendgrid.jsonl")[0] if tp.event_type == "email_click"
    ]
    assert all(tp.campaign and tp.campaign.name for tp in clicks)


def test_same_people_across_files_and_no_raw_pii_in_touchpoints(tmp_path: Path) -> None:
    generate(tmp_path, people=60, days=10, seed=2, end=END, malformed_share=0.05)
    with (tmp_path / "ground_truth.csv").open(newline="") as fh:
        truth = {
            (r["identifier_type"], r["identifier_value"]): r["person"] for r in csv.DictReader(fh)
        }
    assert {t for t, _ in truth} >= {
        "anonymous_id",
        "user_id",
        "email_sha256",
        "phone_sha256",
        "loyalty_id",
        "shopify_customer_id",
    }
    emails = {
        json.loads(line)["email"]
        for line in (tmp_path / "sendgrid.jsonl").read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    }
    assert emails and all(("email_sha256", hash_email(e)) in truth for e in emails)
    phones: set[str] = set()
    for line in (tmp_path / "twilio.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        phones.add(record.get("To") or record["data"]["to"])
    digits = {p[-10:] for p in phones}
    assert digits
    for name in FILES:
        touchpoints, _, _ = _replay(tmp_path / name)
        for tp in touchpoints:
            text = repr(tp.to_record())
            assert not any(e in text for e in emails), name
            assert not any(d in text for d in digits), name
            # every identifier of a touchpoint belongs to a simulated person
            for ident in tp.identifiers:
                if ident.type != "click_id":
                    assert (ident.type, ident.value) in truth, (name, ident.type)


def test_segment_output_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a", people=30, days=7, seed=9)
    generate(tmp_path / "b", people=30, days=7, seed=9)
    for name in (*FILES, "ground_truth.csv", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
