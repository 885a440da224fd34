"""``journeys rechannel`` on the real ClickHouse engine (chDB): stored channels re-derived."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.commands.rechannel import rechannel, rederive
from connectors.ads import AdsSource
from connectors.segment import SegmentSource
from connectors.sendgrid import SendGridSource
from connectors.shopify import ShopifySource
from pipeline.core.channels import DEFAULT, ChannelRules
from pipeline.core.model import Touchpoint
from sinks.clickhouse import TOUCHPOINTS, connect, migrate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PAGE = "https://www.shop.example/landing"

# (referrer, page URL): web visits whose channel depends on Google's list.
VISITS = [
    (None, PAGE + "?utm_source=whatsapp&utm_medium=(none)"),
    (None, PAGE + "?utm_source=google-play&utm_medium=cpc"),
    ("https://groups.google.com/g/shoes", PAGE),
    ("https://answers.yahoo.com/q/1", PAGE),
    ("https://x.com/someone/status/1", PAGE),
    ("https://www.google.co.uk/", PAGE),
    ("https://chatgpt.com/", PAGE),
    (None, PAGE + "?msclkid=abc"),
    ("https://blog.shop.example/post", PAGE),
    (None, PAGE),
]


def _segment(n: int, referrer: str | None, url: str) -> dict[str, Any]:
    return {
        "type": "page",
        "messageId": f"m-{n}",
        "anonymousId": f"a-{n}",
        "timestamp": "2026-11-30T10:00:00Z",
        "context": {"page": {"url": url, "referrer": referrer or ""}},
    }


def _touchpoints() -> list[Touchpoint]:
    out: list[Touchpoint] = []
    for n, (referrer, url) in enumerate(VISITS):
        out += SegmentSource().map(_segment(n, referrer, url), NOW)
    for name in ("order_online.json", "order_pos.json", "order_marketplace.json"):
        order = json.loads((FIXTURES / "shopify" / name).read_text())
        out += ShopifySource().map(order, NOW)
    with (FIXTURES / "ads" / "clicks.csv").open() as fh:
        for record in csv.DictReader(fh):
            out += AdsSource().map({k: v for k, v in record.items() if v}, NOW)
    line = (FIXTURES / "sendgrid" / "events.jsonl").read_text().splitlines()[0]
    out += SendGridSource().map(json.loads(line), NOW)
    return out


def _store(client: Any, touchpoints: list[Touchpoint], channel: str) -> None:
    rows = [
        TOUCHPOINTS.row(replace(tp, channel=channel).to_record(), 0, n, NOW)
        for n, tp in enumerate(touchpoints)
    ]
    client.insert("touchpoints", rows, TOUCHPOINTS.columns, database="journeys")


def _channels(client: Any) -> dict[str, str]:
    _, rows = client.query_rows("SELECT event_id, channel FROM journeys.touchpoints FINAL")
    return {r[0]: r[1] for r in rows}


def test_rechannel_gives_stored_touchpoints_the_connectors_channels(tmp_path: Path) -> None:
    touchpoints = _touchpoints()
    assert {tp.source for tp in touchpoints} == {"segment", "shopify", "ads", "sendgrid"}
    client = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        migrate(client, "journeys")
        _store(client, touchpoints, "stale")

        dry = rechannel(client, "journeys", DEFAULT, dry_run=True, batch=4)
        assert set(_channels(client).values()) == {"stale"}

        moved = rechannel(client, "journeys", DEFAULT, batch=4)
        assert moved == dry
        stored = _channels(client)
        for tp in touchpoints:
            derived = tp.source in ("segment", "ads") or (
                tp.source == "shopify" and tp.properties.get("sales_channel") == "online"
            )
            assert stored[tp.event_id] == (tp.channel if derived else "stale"), tp
        assert sum(moved.values()) == sum(1 for tp in touchpoints if stored[tp.event_id] != "stale")
        by_visit = [stored[tp.event_id] for tp in touchpoints[: len(VISITS)]]
        assert by_visit == [
            "organic_social", "paid_search", "organic_social", "organic_social",
            "organic_social", "organic_search", "referral", "paid_search", "direct", "direct",
        ]  # fmt: skip

        assert rechannel(client, "journeys", DEFAULT) == {}  # nothing left to move
        rules = ChannelRules.from_dict({"sources": {"chatgpt.com": "search"}})
        assert rechannel(client, "journeys", rules) == {("referral", "organic_search"): 1}
        _, rows = client.query_rows("SELECT count() FROM journeys.touchpoints FINAL")
        assert rows[0][0] == len(touchpoints)
    finally:
        client.close()


def test_rederive_keeps_channels_that_do_not_come_from_the_grouping() -> None:
    row = {"source": "twilio", "event_type": "sms_click", "channel": "sms", "properties": {}}
    assert rederive(row, DEFAULT) == "sms"
    order = {
        "source": "shopify",
        "event_type": "store_purchase",
        "channel": "store",
        "properties": {"sales_channel": "pos"},
        "referrer": "https://www.google.com/",
    }
    assert rederive(order, DEFAULT) == "store"
