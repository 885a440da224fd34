"""The walking skeleton's identity stage: one provisional person per strongest identifier.

Each raw touchpoint gets ``person_id = uuid5(strongest identifier)`` and goes on,
keyed by person, to ``journeys.person-touchpoints``; the first sighting of an
identifier is published as a ``MAP`` identity change. Real stitching replaces this.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import MutableMapping
from typing import Any, NamedTuple

from connectors.publisher import dead_letter_record
from pipeline.core.model import routing_key
from pipeline.serde import AvroSerde, SerdeError
from pipeline.topics import Topics

log = logging.getLogger(__name__)

PERSON_NAMESPACE = uuid.UUID("0e3cbb6c-4d4f-5a55-a1b0-5b2f7f0f6e10")


#: Header naming the upstream partition a message was derived from. Downstream stages
#: keep one event-time maximum per upstream partition, so that partitions consumed at
#: different speeds during a replay do not make each other's events late.
UPSTREAM_HEADER = "journeys-upstream"


class Out(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def provisional_person_id(routing_key: str) -> str:
    return str(uuid.uuid5(PERSON_NAMESPACE, routing_key))


class ProvisionalIdentity:
    """Pure-ish processing step: bytes in, messages out; *seen* is a (Faust) table."""

    def __init__(self, serde: AvroSerde, topics: Topics, seen: MutableMapping[str, Any]) -> None:
        self.serde = serde
        self.topics = topics
        self.seen = seen
        self._encode_tp = serde.encoder("Touchpoint")
        self._encode_change = serde.encoder("IdentityChange")
        self._encode_dead = serde.encoder("DeadLetter")

    def process(self, value: bytes, topic: str, partition: int, offset: int) -> list[Out]:
        try:
            rec = self.serde.decode(value, expect="Touchpoint")
        except SerdeError as exc:
            log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
            dead = dead_letter_record(
                "pipeline", "decode", str(exc), value, None, topic, partition, offset
            )
            return [Out(self.topics.dead_letters.name, b"pipeline", self._encode_dead(dead))]
        idents = rec["identifiers"]
        key = routing_key(((i["type"], i["value"]) for i in idents), rec["event_id"])
        person_id = provisional_person_id(key)
        rec["person_id"] = person_id
        upstream = ((UPSTREAM_HEADER, f"{topic}[{partition}]".encode()),)
        out = [
            Out(
                self.topics.person_touchpoints.name,
                person_id.encode(),
                self._encode_tp(rec),
                upstream,
            )
        ]
        if key not in self.seen and idents:
            self.seen[key] = int(rec["occurred_at"].timestamp() * 1000)
            change = {
                "kind": "MAP",
                "at": rec["occurred_at"],
                "person_id": person_id,
                "absorbed_person_id": None,
                "identifiers": idents,
                "rule": "provisional:" + key.split(":", 1)[0],
                "event_id": rec["event_id"],
            }
            out.append(
                Out(
                    self.topics.identity_changes.name,
                    person_id.encode(),
                    self._encode_change(change),
                )
            )
        return out
