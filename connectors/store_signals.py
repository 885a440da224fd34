"""In-store signals: QR-code scans and Wi-Fi logins, as CSV or JSON lines (one a row).

The layout is Journeys' own and is documented in ``docs/sources.md``; examples are
``tests/fixtures/store_signals/signals.csv`` and ``signals.jsonl``. Columns, by header
name (order free, other columns ignored):

===================  ========  ==========================================================
column               required  meaning
===================  ========  ==========================================================
``signal_id``        yes       the scan or login id (unique within the store)
``timestamp``        yes       ISO-8601 (a time without an offset is UTC) or epoch seconds
``store_id``         yes       the store (location) code
``signal``           yes       ``qr_scan`` or ``wifi_login``
``qr_code``          no        what the scanned code names (a campaign, a shelf, a product)
``access_point``     no        the Wi-Fi access point or zone
``loyalty_id``       no        loyalty card / member number → ``loyalty_id``
``user_id``          no        the retailer's customer account id → ``user_id``
``email``            no        hashed here → ``email_sha256`` (a Wi-Fi portal's sign-in)
``phone``            no        hashed here (E.164) → ``phone_sha256``
``device_id``        no        the app's device id of a scan in the retailer's app
===================  ========  ==========================================================

Each row is a touchpoint of channel ``store``, event type ``store_visit`` (a store touch
for journeys), ``store_id`` set and the signal kept in ``properties["signal"]`` (with
``qr_code`` / ``access_point``): profiles count ``qr_scans`` and ``wifi_logins``. The
source event id is ``store_id:signal_id``. A row without any identifier is refused:
it could never join a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import (
    FieldError,
    email_identifier,
    opt_str,
    parse_time,
    phone_identifier,
    req_str,
)
from pipeline.core.model import Identifier, Touchpoint, event_id_for

COLUMNS = (
    "signal_id",
    "timestamp",
    "store_id",
    "signal",
    "qr_code",
    "access_point",
    "loyalty_id",
    "user_id",
    "email",
    "phone",
    "device_id",
)
SIGNALS = ("qr_scan", "wifi_login")


class StoreSignalsSource:
    name: str = "store_signals"
    formats: tuple[str, ...] = ("csv", "jsonl")

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        signal_id = req_str(record, "signal_id", 128)
        store_id = req_str(record, "store_id", 128)
        occurred = parse_time(record.get("timestamp"), "timestamp")
        signal = req_str(record, "signal", 32).strip().lower().replace("-", "_")
        if signal not in SIGNALS:
            raise FieldError("signal", f"expected one of {', '.join(SIGNALS)}, got {signal!r:.40}")
        identifiers: list[Identifier] = []
        for field in ("user_id", "loyalty_id", "device_id"):
            value = opt_str(record, field, 256)
            if value is not None and value.strip():
                identifiers.append(Identifier(field, value.strip()))
        for make, field in ((email_identifier, "email"), (phone_identifier, "phone")):
            found = make(record, field)
            if found is not None:
                identifiers.append(found)
        if not identifiers:
            raise FieldError(
                "loyalty_id", "one of user_id, loyalty_id, email, phone or device_id is required"
            )
        properties = {"signal": signal, "signal_id": signal_id}
        for field in ("qr_code", "access_point"):
            value = opt_str(record, field, 256)
            if value is not None:
                properties[field] = value
        source_event_id = f"{store_id}:{signal_id}"
        return [
            Touchpoint(
                event_id=event_id_for(self.name, source_event_id),
                source=self.name,
                source_event_id=source_event_id,
                occurred_at=occurred,
                received_at=received_at,
                channel="store",
                event_type="store_visit",
                identifiers=tuple(identifiers),
                store_id=store_id,
                properties=properties,
            )
        ]
