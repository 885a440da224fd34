"""What the processing steps return: messages to send, and the headers they carry."""

from __future__ import annotations

from typing import NamedTuple

#: Header naming the ``journeys.touchpoints`` partition a message was derived from.
#: Downstream stages keep one event-time maximum per upstream partition, so that
#: partitions consumed at different speeds during a replay do not make each other's
#: events late, whichever route (fast path or identity owner) an event took.
UPSTREAM_HEADER = "journeys-upstream"


class Out(NamedTuple):
    """One message for the app to send: topic, key, value (None: a tombstone), headers,
    and a partition (None: the producer's partitioner picks it from the key)."""

    topic: str
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
