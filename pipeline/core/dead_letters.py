"""The dead-letter record every stage writes: redacted, with an id derived from where it
was found, so a replayed or retried failure is one row, not two."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pipeline.core.pii import redact

DEAD_LETTER_NAMESPACE = uuid.UUID("2b0f5a8e-7f7c-5d8e-8c1b-3f0e6a9d4c21")


def dead_letter_record(
    source: str,
    stage: str,
    error: str,
    raw: bytes,
    location: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """A ``DeadLetter`` record; its id is deterministic, so a replay adds no duplicate."""
    payload = redact(raw)
    # Errors may quote the offending value ("expected a number, got 'ana@example.com'").
    error = redact(error.encode("utf-8", "replace")).decode("utf-8", "replace")
    where = location or (f"{topic}[{partition}]@{offset}" if topic is not None else "")
    key = f"{source}|{stage}|{where}|".encode() + payload
    return {
        "dead_letter_id": str(uuid.uuid5(DEAD_LETTER_NAMESPACE, key.hex())),
        "source": source,
        "stage": stage,
        "error": error,
        "payload": payload,
        "location": location,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": received_at or datetime.now(UTC),
    }
