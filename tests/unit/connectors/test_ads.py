"""Ad clicks (the documented ad-click export CSV) map to ad_click touchpoints."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.ads import AdsSource
from connectors.base import FieldError
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ads"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = AdsSource()


def rows(name: str) -> list[dict[str, str]]:
    with (FIXTURES / name).open(newline="") as f:
        return list(csv.DictReader(f))


def clicks() -> list[Touchpoint]:
    return [SOURCE.map(r, NOW)[0] for r in rows("clicks.csv")]


def test_a_google_click_is_paid_search_with_its_gclid() -> None:
    tp = clicks()[0]
    assert tp.event_type == "ad_click"
    assert tp.channel == "paid_search"
    assert tp.source_event_id == "google:EAIaIQobChMI0000"
    assert tp.event_id == event_id_for("ads", "google:EAIaIQobChMI0000")
    assert tp.occurred_at == datetime(2026, 9, 28, 12, 1, 10, tzinfo=UTC)
    assert tp.campaign is not None
    assert tp.campaign.click_id == "gclid:EAIaIQobChMI0000"
    assert (tp.campaign.source, tp.campaign.medium) == ("google", "cpc")
    assert tp.campaign.name == "autumn_search"
    assert tp.campaign.term == "ipod nano"
    assert tp.identifier("click_id") == "gclid:EAIaIQobChMI0000"
    assert tp.device_type == "mobile"
    assert tp.properties["cost"] == "0.42"
    assert tp.revenue is None


def test_channels_follow_the_platform() -> None:
    assert [tp.channel for tp in clicks()] == [
        "paid_search",
        "paid_search",
        "paid_social",
        "paid_social",
        "display",
    ]


def test_click_id_params_and_identifiers() -> None:
    tps = clicks()
    assert [(tp.campaign.click_id or "").split(":")[0] for tp in tps if tp.campaign] == [
        "gclid",
        "msclkid",
        "fbclid",
        "ttclid",
        "click_id",
    ]
    assert tps[1].identifier("anonymous_id") == "anon-7f3e"
    assert tps[2].identifier("email_sha256") == sha256_hex("ana.customer@example.com")
    assert tps[3].identifier("device_id") == "38400000-8cf0-11bd-b23e-10b96e4ef00d"
    assert tps[4].identifier("email_sha256") == rows("clicks.csv")[4]["email_sha256"]
    assert tps[4].device_type == "tablet"


def test_the_landing_page_fills_what_the_row_lacks() -> None:
    row = dict(rows("clicks.csv")[1], campaign="", keyword="")
    (tp,) = SOURCE.map(row, NOW)
    assert tp.campaign is not None and tp.campaign.name == "brand_search"


def test_no_raw_email_survives() -> None:
    assert "example.com" not in repr([tp.to_record() for tp in clicks()]).replace(
        "shop.example.com", ""
    )


BAD = ["click_id", "click_time", "platform", "click_id_param", "cost", "email", "email_sha256"]


@pytest.mark.parametrize(("index", "field"), list(enumerate(BAD)))
def test_bad_rows_name_their_field(index: int, field: str) -> None:
    with pytest.raises(FieldError) as err:
        SOURCE.map(rows("bad.csv")[index], NOW)
    assert err.value.field == field


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "clicks.csv", FIXTURES / "bad.csv"]
    stats = replay_files(paths, get_source("ads"), tps.append, rejected.append)
    assert stats.records == 12
    assert (len(tps), len(rejected)) == (5, 7)
