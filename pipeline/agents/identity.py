"""The identity stage: a fast path for known identifiers and a single owner of the graph.

``journeys.touchpoints`` (P partitions)
    :class:`IdentityRouter` asks the graph's read-only :meth:`IdentityGraph.lookup`
    whether the event can change nothing (every identifier known, one person, this
    identifier set resolved before). If so the touchpoint goes, with its person, to
    ``journeys.person-touchpoints``. Otherwise the owner resolves it in place when this
    worker holds the owner's partition, else it goes, unchanged, to
    ``journeys.identity-links``.

``journeys.identity-links`` (1 partition, the single owner)
    :class:`IdentityOwner` runs :meth:`IdentityGraph.resolve`: it maps new identifiers,
    merges persons (the older survives), refuses links the rules forbid, and publishes
    every change to ``journeys.identity-changes``. For each merge it also sends a
    *merge control* message, keyed by the absorbed person, on
    ``journeys.person-touchpoints``: the journey stage of that person hands its state
    over to the survivor (see :mod:`pipeline.agents.journeys`).

Both steps are plain objects over the graph (bytes in, :class:`Out` messages out); the
graph's stores are the batch engine's state tables in the worker. Each message keeps a
header naming the ``journeys.touchpoints`` partition it came from and its route
(``touchpoints[3]`` or ``owner/touchpoints[3]``): the journey stage keeps one event-time
maximum per upstream, and each upstream is in event order, so the owner's extra hop
makes nothing late once its route has been seen (on the owner's worker there is no
hop: misses are resolved in place).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.identity import ChangeKind, IdentityGraph
from pipeline.core.model import Identifier, to_millis
from pipeline.serde import AvroSerde, SerdeError
from pipeline.topics import CONTROL_HEADER, FORGET_CONTROL, MERGE_CONTROL, MOVE_CONTROL, Topics

log = logging.getLogger(__name__)

OWNER_KEY = b"owner"


def _zigzag_varint(n: int) -> bytes:
    """Avro's encoding of the non-negative ``long`` *n* (a string's length)."""
    n <<= 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SAMPLE_TOUCHPOINT: dict[str, Any] = {
    "event_id": "e",
    "source": "s",
    "source_event_id": None,
    "occurred_at": 0,
    "received_at": 0,
    "channel": "direct",
    "event_type": "page",
    "identifiers": [{"type": "anonymous_id", "value": "a"}],
    "campaign": None,
    "referrer": None,
    "device_type": None,
    "store_id": None,
    "order_id": None,
    "revenue": None,
    "currency": None,
    "properties": {"k": "v"},
    "person_id": None,
}


def _splice_header(serde: AvroSerde, encode: Any) -> bytes | None:
    """The header of Touchpoints written with the current schema, if the router may set
    ``person_id`` by splicing bytes (see :meth:`_Step._routed`); else None.

    Checked once on a sample rather than assumed: the spliced bytes must equal what the
    encoder writes, so a schema whose last field is not a nullable ``person_id`` string
    turns the shortcut off.
    """
    try:
        plain = encode(dict(_SAMPLE_TOUCHPOINT))
        person = encode({**_SAMPLE_TOUCHPOINT, "person_id": "p-1"})
    except SerdeError:
        return None
    if plain.endswith(b"\x00") and plain[:-1] + b"\x02\x06p-1" == person:
        return plain[: 10 if serde.wire_format == "single-object" else 5]
    return None


def _identifiers(rec: dict[str, Any]) -> list[Identifier]:
    return [Identifier(i["type"], i["value"]) for i in rec.get("identifiers") or ()]


class _Step:
    def __init__(self, serde: AvroSerde, topics: Topics, graph: IdentityGraph) -> None:
        self.serde = serde
        self.topics = topics
        self.graph = graph
        self._encode_tp = serde.encoder("Touchpoint")
        self._encode_change = serde.encoder("IdentityChange")
        self._encode_dead = serde.encoder("DeadLetter")
        self._tp_header = _splice_header(serde, self._encode_tp)

    def _decode(
        self, value: bytes, topic: str, partition: int, offset: int
    ) -> tuple[dict[str, Any] | None, list[Out]]:
        try:
            return self.serde.decode(value, expect="Touchpoint"), []
        except SerdeError as exc:
            log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
            dead = dead_letter_record(
                "pipeline", "identity", str(exc), value, None, topic, partition, offset
            )
            return None, [Out(self.topics.dead_letters.name, b"pipeline", self._encode_dead(dead))]

    def _routed(
        self, rec: dict[str, Any], person: str, upstream: bytes, value: bytes | None = None
    ) -> Out:
        """The touchpoint *rec* with its person, for ``journeys.person-touchpoints``.

        *value*, the bytes *rec* was decoded from, is reused when it can be: when it was
        written with the current Touchpoint schema and without a person. ``person_id``
        is that schema's last field, so its null (the union branch 0, one ``00`` byte)
        ends the body; replacing that byte with branch 1 and the string gives exactly
        the bytes the encoder would write, without encoding the record again.
        """
        person_key = person.encode()
        encoded: bytes | None = None
        if (
            value is not None
            and self._tp_header is not None
            and rec.get("person_id") is None
            and value.startswith(self._tp_header)
            and value.endswith(b"\x00")
        ):
            encoded = value[:-1] + b"\x02" + _zigzag_varint(len(person_key)) + person_key
        rec["person_id"] = person
        return Out(
            self.topics.person_touchpoints.name,
            person_key,
            encoded if encoded is not None else self._encode_tp(rec),
            ((UPSTREAM_HEADER, upstream),),
        )


class IdentityRouter(_Step):
    """The fast path on ``journeys.touchpoints``: known events skip the owner.

    With *owner* and *owns*: while this worker holds the owner's partition (``owns()``),
    an event the fast path cannot answer is resolved here, at once and in its
    partition's order, instead of taking the hop through ``journeys.identity-links``:
    one produce, consume and decode fewer for about a third of the touchpoints, and a
    person's events stay on one route. Other workers still send their misses to the
    owner.
    """

    hits = 0
    misses = 0

    def __init__(
        self,
        serde: AvroSerde,
        topics: Topics,
        graph: IdentityGraph,
        owner: IdentityOwner | None = None,
        owns: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(serde, topics, graph)
        self.owner = owner
        self.owns = owns

    def process(
        self,
        value: bytes,
        topic: str,
        partition: int,
        offset: int,
        _upstream: bytes | None = None,
        _control: bytes | None = None,
    ) -> list[Out]:
        rec, dead = self._decode(value, topic, partition, offset)
        if rec is None:
            return dead
        upstream = f"{topic}[{partition}]".encode()
        person = self.graph.lookup(_identifiers(rec), to_millis(rec["occurred_at"]))
        if person is None:
            self.misses += 1
            if self.owner is not None and self.owns is not None and self.owns():
                return self.owner.resolved(rec, upstream, value)
            return [
                Out(
                    self.topics.identity_links.name,
                    OWNER_KEY,
                    value,
                    ((UPSTREAM_HEADER, upstream),),
                )
            ]
        self.hits += 1
        return [self._routed(rec, person, upstream, value)]


class IdentityOwner(_Step):
    """The single writer of the identity graph, on ``journeys.identity-links``."""

    def process(
        self,
        value: bytes,
        topic: str,
        partition: int,
        offset: int,
        upstream: bytes | None = None,
        control: bytes | None = None,
    ) -> list[Out]:
        if control == FORGET_CONTROL:
            return self.forget(value)
        rec, dead = self._decode(value, topic, partition, offset)
        if rec is None:
            return dead
        # The owner's route is an upstream of its own: its events are in order per raw
        # partition, but behind the fast path's.
        route = b"owner/" + (upstream or f"{topic}[{partition}]".encode())
        return self.resolved(rec, route)

    def resolved(self, rec: dict[str, Any], route: bytes, value: bytes | None = None) -> list[Out]:
        """Stitch the decoded touchpoint *rec*: the identity changes (with a merge
        control for each merge) and the touchpoint with its person, on *route*."""
        resolution = self.graph.resolve(
            _identifiers(rec), rec["event_id"], to_millis(rec["occurred_at"])
        )
        out: list[Out] = []
        for change in resolution.changes:
            record = self._encode_change(change.to_record())
            out.append(Out(self.topics.identity_changes.name, change.person_id.encode(), record))
            if change.absorbed_person_id and change.kind in (ChangeKind.MERGE, ChangeKind.MAP):
                # Ordered after every event already routed to the absorbed person (a
                # merge) or to the person identifiers moved away from (a move).
                kind = MERGE_CONTROL if change.kind is ChangeKind.MERGE else MOVE_CONTROL
                out.append(
                    Out(
                        self.topics.person_touchpoints.name,
                        change.absorbed_person_id.encode(),
                        record,
                        ((CONTROL_HEADER, kind),),
                    )
                )
        out.append(self._routed(rec, resolution.person_id, route, value))
        return out

    def forget(self, value: bytes) -> list[Out]:
        """A ``journeys forget`` request: ``{"person_id": ...}`` or ``{"identifier":
        {"type": ..., "value": ...}}`` (e-mails and phones already hashed).

        Erases the person from the graph, publishes the changes (the sink deletes the
        person's rows on ``FORGET``), then a tombstone for the person's key on the
        compacted identity-changes topic, and tells the journey stage to drop its state.
        """
        try:
            request = json.loads(value)
            ident = request.get("identifier")
            person = (
                self.graph.person_of(Identifier(str(ident["type"]), str(ident["value"])))
                if ident
                else request.get("person_id")
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("forget request ignored: %s", exc)
            return []
        if not person:
            log.info("forget request: no person known for it")
            return []
        changes: list[Any] = []
        if not self.graph.forget(str(person), changes=changes):
            log.info("forget request: person %s is not in the identity graph", person)
            return []
        out: list[Out] = []
        for change in changes:
            key = change.person_id.encode()
            out.append(
                Out(self.topics.identity_changes.name, key, self._encode_change(change.to_record()))
            )
        forgotten = changes[-1].person_id.encode()
        out.append(Out(self.topics.identity_changes.name, forgotten, None))
        out.append(
            Out(
                self.topics.person_touchpoints.name,
                forgotten,
                forgotten,
                ((CONTROL_HEADER, FORGET_CONTROL),),
            )
        )
        log.info(
            "forgot person %s (%d identifiers)", forgotten.decode(), len(changes[-1].identifiers)
        )
        return out
