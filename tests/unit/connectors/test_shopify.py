"""Shopify orders/create webhooks: online, POS and marketplace purchases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import FieldError
from connectors.registry import get_source
from connectors.replay import replay_files
from connectors.shopify import ShopifySource, sales_channel_kind
from pipeline.core.model import Touchpoint, event_id_for
from pipeline.core.pii import sha256_hex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "shopify"
NOW = datetime(2026, 10, 1, tzinfo=UTC)
SOURCE = ShopifySource()


def order(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"order_{name}.json").read_text())
    return data


def test_an_online_order_is_a_purchase_credited_to_its_landing_page() -> None:
    (tp,) = SOURCE.map(order("online"), NOW)
    assert tp.event_type == "purchase"
    assert tp.event_id == event_id_for("shopify", "820982911946154508")
    assert tp.source_event_id == tp.order_id == "820982911946154508"
    assert tp.revenue == 403.0
    assert tp.currency == "USD"
    assert tp.occurred_at == datetime(2026, 9, 28, 12, 9, 3, tzinfo=UTC)
    # utm_medium=cpc from google (and a gclid) on the landing page: paid search
    assert tp.channel == "paid_search"
    assert tp.campaign is not None
    assert tp.campaign.name == "autumn_search"
    assert tp.campaign.click_id == "gclid:EAIaIQobChMI0000"
    assert tp.referrer == "https://www.google.com/"
    assert tp.store_id is None
    assert tp.identifier("shopify_customer_id") == "115310627314723954"
    assert tp.identifier("email_sha256") == sha256_hex("jon@example.com")
    assert tp.identifier("phone_sha256") == sha256_hex("+16135551111")
    assert tp.identifier("user_id") is None


def test_an_online_order_without_campaign_follows_its_referrer() -> None:
    rec = dict(order("online"), landing_site="/", referring_site="https://www.bing.com/")
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.channel == "organic_search"
    rec = dict(order("online"), landing_site=None, referring_site=None)
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.channel == "direct"


# The shipping_lines entry as Shopify's Order resource documents it (id, code, title,
# price, source, carrier_identifier, requested_fulfillment_service_id, ...).
PICKUP_LINE = {
    "id": 271878346596884015,
    "carrier_identifier": None,
    "code": "Pickup in store",
    "delivery_category": None,
    "discounted_price": "0.00",
    "phone": None,
    "price": "0.00",
    "requested_fulfillment_service_id": None,
    "source": "shopify",
    "title": "Pickup at NYC-05",
    "tax_lines": [],
    "discount_allocations": [],
}


def test_an_online_order_collected_in_store_is_bopis() -> None:
    rec = dict(order("online"), shipping_lines=[PICKUP_LINE], location_id=905684977)
    (tp,) = SOURCE.map(rec, NOW)
    assert tp.event_type == "purchase"  # still the online store's conversion...
    assert tp.channel == "paid_search"  # ...credited to how the shopper arrived
    assert tp.properties["fulfillment"] == "pickup"
    assert tp.properties["pickup_location"] == "Pickup at NYC-05"
    assert tp.store_id == "905684977"
    shipped = dict(PICKUP_LINE, code="Standard", title="Standard Shipping", price="4.99")
    (tp,) = SOURCE.map(dict(order("online"), shipping_lines=[shipped]), NOW)
    assert "fulfillment" not in tp.properties
    assert tp.store_id is None
    with pytest.raises(FieldError, match="shipping_lines"):
        SOURCE.map(dict(order("online"), shipping_lines={"code": "x"}), NOW)


def test_a_pos_order_is_a_store_purchase_at_its_location() -> None:
    (tp,) = SOURCE.map(order("pos"), NOW)
    assert tp.event_type == "store_purchase"
    assert tp.channel == "store"
    assert tp.store_id == "905684977"
    assert tp.revenue == 59.9
    assert tp.occurred_at == datetime(2026, 9, 29, 18, 30, tzinfo=UTC)  # processed_at
    assert tp.identifier("email_sha256") == sha256_hex("bob.norman@example.com")
    assert tp.identifier("phone_sha256") == sha256_hex("+16135552222")
    # the order's user_id is the staff member at the till, never a customer identifier
    assert tp.identifier("user_id") is None
    assert "799407056" not in repr(tp.identifiers)


def test_a_sales_channel_order_is_a_marketplace_purchase() -> None:
    (tp,) = SOURCE.map(order("marketplace"), NOW)
    assert tp.event_type == "marketplace_purchase"
    assert tp.channel == "marketplace"
    assert tp.currency == "EUR"
    assert tp.campaign is None
    assert [i.type for i in tp.identifiers] == ["email_sha256"]


def test_a_staff_made_order_is_unassigned_and_keeps_its_revenue_despite_a_junk_phone() -> None:
    (tp,) = SOURCE.map(order("draft"), NOW)
    assert tp.event_type == "purchase"
    assert tp.channel == "unassigned"
    assert tp.revenue == 120.0
    assert tp.identifier("phone_sha256") is None
    assert tp.properties["invalid_identifiers"] == "phone"


def test_the_customer_id_type_is_configurable() -> None:
    (tp,) = ShopifySource(customer_id_type="user_id").map(order("online"), NOW)
    assert tp.identifier("user_id") == "115310627314723954"


@pytest.mark.parametrize(
    ("source_name", "kind"),
    [
        ("web", "online"),
        (None, "online"),
        ("pos", "pos"),
        ("shopify_draft_order", "staff"),
        ("iphone", "staff"),
        ("amazon", "marketplace"),
        ("1780363", "marketplace"),
    ],
)
def test_sales_channels(source_name: str | None, kind: str) -> None:
    assert sales_channel_kind(source_name) == kind


def test_no_raw_pii_survives() -> None:
    text = repr([SOURCE.map(order(n), NOW)[0].to_record() for n in ("online", "pos", "draft")])
    assert "example.com" not in text.lower()
    assert "6135551111" not in text and "555-2222" not in text


BAD = ["id", "total_price", "created_at", "customer", "total_price"]


@pytest.mark.parametrize(("lineno", "field"), list(enumerate(BAD, start=1)))
def test_bad_orders_name_their_field(lineno: int, field: str) -> None:
    line = (FIXTURES / "bad.jsonl").read_text().splitlines()[lineno - 1]
    with pytest.raises(FieldError) as err:
        SOURCE.map(json.loads(line), NOW)
    assert err.value.field == field


def test_replay_gives_touchpoints_plus_dead_letters_equal_to_records() -> None:
    tps: list[Touchpoint] = []
    rejected: list[Any] = []
    paths = [FIXTURES / "orders.jsonl", FIXTURES / "bad.jsonl"]
    stats = replay_files(paths, get_source("shopify"), tps.append, rejected.append)
    assert stats.records == 10
    assert (len(tps), len(rejected)) == (4, 6)
    assert sum(tp.revenue or 0 for tp in tps) == pytest.approx(403 + 59.9 + 25 + 120)
    assert rejected[-1].error.startswith("$: expected a JSON object")
