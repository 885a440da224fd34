"""Shopify ``orders/create`` webhooks: online-store, point-of-sale and marketplace orders.

Shopify POSTs the order (the REST Admin API ``Order`` resource) as JSON; `journeys replay
--source shopify` reads one order per line. Reference:
https://shopify.dev/docs/api/admin-rest/latest/resources/order

* The order ``id`` is the source event id; ``order_id`` is the same id, ``revenue`` the
  ``total_price`` and ``currency`` the shop currency. ``occurred_at`` is ``processed_at``
  (when the sale happened; imported and offline POS orders keep their own time), else
  ``created_at``.
* The sales channel is the order's ``source_name``:

  ==============================================  =========================  ==============
  ``source_name``                                 event type                 channel
  ==============================================  =========================  ==============
  ``web`` (the online store), empty               ``purchase``               GA4 channel of
                                                                             ``landing_site``
                                                                             and
                                                                             ``referring_site``
  ``pos``                                         ``store_purchase``         ``store``
  ``shopify_draft_order``, ``iphone``,            ``purchase``               ``unassigned``
  ``android`` (staff-made orders)
  anything else (an app id or handle: Amazon,     ``marketplace_purchase``   ``marketplace``
  eBay, Facebook & Instagram, TikTok...)
  ==============================================  =========================  ==============

  ``store_id`` is the POS ``location_id``.
* ``customer.id`` → identifier ``shopify_customer_id``: Shopify creates a customer record
  for guest checkouts too, so it is not the retailer's login id. A shop whose website
  identifies signed-in shoppers by their Shopify customer id can construct
  ``ShopifySource(customer_id_type="user_id")``. ``email`` (else ``contact_email``, else
  ``customer.email``) → ``email_sha256``, ``phone`` (else ``customer.phone``) →
  ``phone_sha256``. The order's ``user_id`` is the *staff member* who rang up a POS sale
  and is never used as an identifier; addresses are not read. An e-mail or phone that
  cannot be normalised is left out (named in ``properties["invalid_identifiers"]``)
  rather than costing the shop its order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import (
    FieldError,
    email_identifier,
    opt_float,
    opt_str,
    parse_time,
    phone_identifier,
    req_str,
)
from pipeline.core.channels import campaign_from_url
from pipeline.core.model import Identifier, Touchpoint, event_id_for
from pipeline.core.source_channels import (
    SHOPIFY_ONLINE,
    SHOPIFY_POS,
    SHOPIFY_UNATTRIBUTED,
    source_channel,
)

TOPIC = "orders/create"


def sales_channel_kind(source_name: str | None) -> str:
    """``online``, ``pos``, ``staff`` or ``marketplace`` for an order's ``source_name``."""
    sc = (source_name or "").strip().lower().replace(" ", "_")
    if not sc or sc in SHOPIFY_ONLINE:
        return "online"
    if sc in SHOPIFY_POS:
        return "pos"
    if sc in SHOPIFY_UNATTRIBUTED:
        return "staff"
    return "marketplace"


_EVENT_TYPES = {
    "online": "purchase",
    "pos": "store_purchase",
    "staff": "purchase",
    "marketplace": "marketplace_purchase",
}


def _pickup_line(order: Mapping[str, Any]) -> str | None:
    """The title of a local-pickup shipping line (``code``/``title`` naming a pickup),
    or None when the order ships."""
    lines = order.get("shipping_lines")
    if lines is None:
        return None
    if not isinstance(lines, list):
        raise FieldError("shipping_lines", "expected a JSON array")
    for n, line in enumerate(lines):
        if not isinstance(line, Mapping):
            raise FieldError(f"shipping_lines[{n}]", "expected a JSON object")
        text = " ".join(str(line.get(k) or "") for k in ("code", "title", "delivery_category"))
        if "pickup" in text.lower().replace("-", "").replace(" ", ""):
            return str(line.get("title") or line.get("code") or "pickup")[:128]
    return None


class ShopifySource:
    name: str = "shopify"
    formats: tuple[str, ...] = ("jsonl",)

    def __init__(self, customer_id_type: str = "shopify_customer_id") -> None:
        self.customer_id_type = customer_id_type

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        order_id = req_str(record, "id", 64)
        occurred = parse_time(record.get("processed_at") or record.get("created_at"), "created_at")
        revenue = opt_float(record, "total_price")
        if revenue is None:
            raise FieldError("total_price", "required")
        currency = opt_str(record, "currency", 8) or opt_str(record, "presentment_currency", 8)
        source_name = opt_str(record, "source_name", 128)
        kind = sales_channel_kind(source_name)
        event_type = _EVENT_TYPES[kind]
        landing = opt_str(record, "landing_site", 8192)
        referrer = opt_str(record, "referring_site", 8192)
        campaign = campaign_from_url(landing) if kind == "online" and landing else None
        channel = source_channel(
            self.name,
            event_type,
            campaign=campaign,
            referrer=referrer if kind == "online" else None,
            page_url=landing if kind == "online" else None,
            sales_channel=source_name,
        )
        pickup = _pickup_line(record) if kind == "online" else None
        store_id = opt_str(record, "location_id", 64) if kind == "pos" or pickup else None
        identifiers, dropped = self._identifiers(record)
        properties: dict[str, str] = {"sales_channel": kind}
        if pickup is not None:
            # Bought online, picked up in store (BOPIS): still an online conversion of its
            # acquisition channel; the pickup store is kept for the online-to-store view.
            properties["fulfillment"] = "pickup"
            properties["pickup_location"] = pickup
        if dropped:
            properties["invalid_identifiers"] = ",".join(dropped)
        for field, prop in (
            ("source_name", "source_name"),
            ("name", "order_name"),
            ("financial_status", "financial_status"),
            ("app_id", "app_id"),
            ("subtotal_price", "subtotal_price"),
            ("total_discounts", "total_discounts"),
        ):
            value = opt_str(record, field, 256)
            if value is not None:
                properties[prop] = value
        if record.get("test") is True:
            properties["test"] = "true"
        if landing and kind == "online":
            properties["landing_site"] = landing[:2048]
        return [
            Touchpoint(
                event_id=event_id_for(self.name, order_id),
                source=self.name,
                source_event_id=order_id,
                occurred_at=occurred,
                received_at=received_at,
                channel=channel,
                event_type=event_type,
                identifiers=identifiers,
                campaign=campaign,
                referrer=referrer if kind == "online" else None,
                store_id=store_id,
                order_id=order_id,
                revenue=revenue,
                currency=currency.upper() if currency else None,
                properties=properties,
            )
        ]

    def _identifiers(self, order: Mapping[str, Any]) -> tuple[tuple[Identifier, ...], list[str]]:
        """The customer's identifiers, and the fields whose junk value was left out.

        An e-mail or phone typed by the shopper that cannot be normalised does not cost
        the shop its order: the identifier is dropped and named in ``properties``.
        """
        out: list[Identifier] = []
        dropped: list[str] = []
        customer = order.get("customer")
        if customer is not None and not isinstance(customer, Mapping):
            raise FieldError("customer", "expected a JSON object")
        customer_id = opt_str(order, "customer.id", 64)
        if customer_id is not None:
            out.append(Identifier(self.customer_id_type, customer_id))
        for make, paths in (
            (email_identifier, ("email", "contact_email", "customer.email")),
            (phone_identifier, ("phone", "customer.phone")),
        ):
            for path in paths:
                try:
                    found = make(order, path)
                except FieldError:
                    dropped.append(path)
                    continue
                if found is not None:
                    out.append(found)
                    break
        return tuple(dict.fromkeys(out)), dropped
