"""The sources Journeys knows, by the names of the contract (``replay --source NAME``)."""

from __future__ import annotations

from connectors.ads import AdsSource
from connectors.base import ConnectorError, Source
from connectors.interactions import InteractionsSource
from connectors.pos import PosSource
from connectors.segment import SegmentSource
from connectors.sendgrid import SendGridSource
from connectors.shopify import ShopifySource
from connectors.store_signals import StoreSignalsSource
from connectors.twilio import TwilioSource


def _sources() -> dict[str, Source]:
    return {
        "segment": SegmentSource(),
        "sendgrid": SendGridSource(),
        "twilio": TwilioSource(),
        "shopify": ShopifySource(),
        "pos": PosSource(),
        "ads": AdsSource(),
        "interactions": InteractionsSource(),
        "store_signals": StoreSignalsSource(),
    }


SOURCES: dict[str, Source] = _sources()


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError as exc:
        raise ConnectorError(
            f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}"
        ) from exc
