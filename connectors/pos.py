"""Point-of-sale store transactions, as a CSV file (one transaction a row).

The column layout is Journeys' own and is documented in ``docs/sources.md``; an
example is ``tests/fixtures/pos/transactions.csv``. Columns, by header name (order free,
other columns ignored):

===================  ========  ==========================================================
column               required  meaning
===================  ========  ==========================================================
``transaction_id``   yes       the receipt / transaction number (unique within a store)
``timestamp``        yes       ISO-8601 (a time without an offset is UTC) or epoch seconds
``store_id``         yes       the store (location) code
``type``             no        ``purchase`` (default), ``return`` or ``visit``
``total``            purchase  the amount paid, tax included (negative for a return)
``currency``         no        ISO 4217 code
``loyalty_id``       no        loyalty card / member number → ``loyalty_id``
``user_id``          no        the retailer's customer account id → ``user_id``
``email``            no        hashed here → ``email_sha256``
``phone``            no        hashed here (E.164) → ``phone_sha256``
``register_id``      no        till / register
``items``            no        number of items
===================  ========  ==========================================================

* ``type`` gives the event type: ``store_purchase``, ``store_return``, ``store_visit`` (a
  loyalty check-in without a sale); the channel is ``store`` and ``store_id`` is set.
* The source event id is ``store_id:transaction_id``.
* An e-mail or phone that cannot be normalised is left out (and named in
  ``properties["invalid_identifiers"]``) rather than costing the store its sale.
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
from pipeline.core.model import Identifier, Touchpoint, event_id_for
from pipeline.core.source_channels import source_channel

COLUMNS = (
    "transaction_id",
    "timestamp",
    "store_id",
    "type",
    "total",
    "currency",
    "loyalty_id",
    "user_id",
    "email",
    "phone",
    "register_id",
    "items",
)
TYPES = {"purchase": "store_purchase", "return": "store_return", "visit": "store_visit"}


class PosSource:
    name: str = "pos"
    formats: tuple[str, ...] = ("csv", "jsonl")

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        transaction_id = req_str(record, "transaction_id", 128)
        store_id = req_str(record, "store_id", 128)
        occurred = parse_time(record.get("timestamp"), "timestamp")
        kind = (opt_str(record, "type", 32) or "purchase").strip().lower()
        if kind not in TYPES:
            raise FieldError("type", f"expected one of {', '.join(TYPES)}, got {kind!r:.40}")
        event_type = TYPES[kind]
        revenue = opt_float(record, "total")
        if revenue is None and kind != "visit":
            raise FieldError("total", f"required for a {kind}")
        currency = opt_str(record, "currency", 8)
        if currency is not None and not (len(currency) == 3 and currency.isalpha()):
            raise FieldError("currency", f"expected an ISO 4217 code, got {currency!r:.20}")

        identifiers: list[Identifier] = []
        dropped: list[str] = []
        for field, type_ in (("user_id", "user_id"), ("loyalty_id", "loyalty_id")):
            value = opt_str(record, field, 256)
            if value is not None:
                identifiers.append(Identifier(type_, value.strip()))
        for make, field in ((email_identifier, "email"), (phone_identifier, "phone")):
            try:
                found = make(record, field)
            except FieldError:
                dropped.append(field)  # a typo at the till must not lose the sale
                continue
            if found is not None:
                identifiers.append(found)

        properties: dict[str, str] = {"transaction_id": transaction_id, "type": kind}
        for field in ("register_id", "items"):
            value = opt_str(record, field, 128)
            if value is not None:
                properties[field] = value
        if dropped:
            properties["invalid_identifiers"] = ",".join(dropped)
        source_event_id = f"{store_id}:{transaction_id}"
        return [
            Touchpoint(
                event_id=event_id_for(self.name, source_event_id),
                source=self.name,
                source_event_id=source_event_id,
                occurred_at=occurred,
                received_at=received_at,
                channel=source_channel(self.name, event_type),
                event_type=event_type,
                identifiers=tuple(identifiers),
                store_id=store_id,
                order_id=None if kind == "visit" else source_event_id,
                revenue=revenue,
                currency=currency.upper() if currency else None,
                properties=properties,
            )
        ]
