"""The sources Journeys knows, by the names of the contract (``replay --source NAME``)."""

from __future__ import annotations

from connectors.base import ConnectorError, Source
from connectors.segment import SegmentSource


def _sources() -> dict[str, Source]:
    return {"segment": SegmentSource()}


SOURCES: dict[str, Source] = _sources()


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError as exc:
        raise ConnectorError(
            f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}"
        ) from exc
