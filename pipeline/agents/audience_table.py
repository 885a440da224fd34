"""The audiences agent's person table and its changelog: the partition of a key (the
CRC32 librdkafka and the table's partitioner agree on), reserved keys that hash to a
given partition, the recovery fence written before Faust recovers the table, and
:class:`PersonTable`, the step's per-batch cache of person entries, written to the
table once per batch with the framed snapshots that bound the changelog
(``docs/segments.md``, ``docs/persistence.md``)."""

from __future__ import annotations

import heapq
import json
import logging
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from pipeline.agents.messages import Out
from pipeline.core.audiences import Audiences, Change, PersonState
from pipeline.core.profiles import ProfileError
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)

#: Table keys of the stage's own bookkeeping (never a person id).
WATERMARK_KEY = "__watermark__:{partition}"
#: The table key of the record that ends a changelog partition before recovery.
RECOVERY_FENCE_KEY = "__recovery-fence__:{partition}"
#: A table entry ``{FORWARD: survivor}`` marks a person absorbed by a merge.
FORWARD = "forward"
#: The table entry's partition (to rebuild the deadline heap after a restart).
_PARTITION = "_p"


def partition_for(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (CRC32 of the key) picks: the
    engine's producers key person topics so, and this stage's sends must agree."""
    return zlib.crc32(key) % partitions


def crc32_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Faust's producer partitioner: the same CRC32 of the key as librdkafka, so the
    table's changelog entry of a person lands on the partition of the person's signals.
    A Faust table with ``key_type=str`` serializes its keys as JSON strings: the string
    inside is hashed, as the signals' raw key is."""
    if key is None:
        return (available or all_partitions)[0]
    return sorted(all_partitions)[zlib.crc32(unquoted(key)) % len(all_partitions)]


def unquoted(key: bytes) -> bytes:
    """*key* without its JSON string quoting, if it has one (UTF-8)."""
    if len(key) >= 2 and key[:1] == b'"' and key[-1:] == b'"':
        try:
            text = json.loads(key)
        except ValueError:
            return key
        if isinstance(text, str):
            return text.encode()
    return key


def fence_changelog(
    settings: Settings,
    topic: str,
    partitions: int,
    encode_key: Callable[[str], bytes],
    encode_value: Callable[[Any], bytes],
) -> int:
    """End each partition of the table's changelog *topic* with a record in a batch of its
    own, before Faust recovers the table; returns how many were written. The embedded
    broker reports a partition's high watermark as its last batch's base offset + 1
    (tests/integration/test_broker_quirks.py), and Faust recovers a table up to the high
    watermark: after a crash, the records of a last batch but its first could be lost.
    The record is a reserved key of that partition with a fresh token; nothing else
    reads it. A topic that does not exist yet (or has another partition count) is left
    alone: there is nothing to recover, or Faust will refuse it."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    conf = settings.kafka_config()
    try:
        # All topics: a request naming the topic would create it on the embedded broker.
        meta = AdminClient(conf).list_topics(timeout=2)  # the broker is up by now
    except KafkaException as exc:
        log.warning("no recovery fence on %s: %s", topic, exc)
        return 0
    found = meta.topics.get(topic)
    if found is None or found.error is not None or set(found.partitions) != set(range(partitions)):
        return 0
    producer = Producer({**conf, "linger.ms": 0})
    token = encode_value(uuid.uuid4().hex)
    written = 0
    for p in sorted(found.partitions):
        key = reserved_key(RECOVERY_FENCE_KEY, p, partitions, lambda k: unquoted(encode_key(k)))
        producer.produce(topic, key=encode_key(key), value=token, partition=p)
        if producer.flush(10) == 0:  # one record, one batch: flushed before the next
            written += 1
    return written


def watermark_key(partition: int, partitions: int) -> str:
    """A key for *partition*'s clock that hashes to *partition* itself."""
    return reserved_key(WATERMARK_KEY, partition, partitions)


def reserved_key(
    template: str, partition: int, partitions: int, encode: Callable[[str], bytes] = str.encode
) -> str:
    """A bookkeeping key made from *template* whose encoded form hashes to *partition*."""
    for i in range(100_000):
        key = f"{template.format(partition=partition)}:{i}"
        if partition_for(encode(key), partitions) == partition:
            return key
    raise ValueError(f"no {template} key hashes to partition {partition}")  # pragma: no cover


class PersonTable:
    """The person entries of :class:`~pipeline.agents.audience_step.AudienceStep`: read
    through a cache for the batch, written to the table once per batch by :meth:`flush`,
    and the snapshots of the table's changelog; the step's ``__init__`` sets the
    attributes declared here."""

    topics: Topics
    states: MutableMapping[str, Any]
    audiences: Audiences
    changes: int
    snapshots: int
    snapshot_min_records: int
    _heaps: dict[int, list[tuple[int, str]]]
    _encode_profile: Callable[[dict[str, Any]], bytes]
    _encode_change: Callable[[dict[str, Any]], bytes]
    _cache: dict[str, PersonState | str | None]
    _dirty: dict[str, int]
    _profiles: set[str]
    _changelog_key: Callable[[str], bytes]
    _written: dict[int, int]
    _snapshot_checked: dict[int, int]
    _frame: list[tuple[str, str]]

    def _entry(self, person: str) -> PersonState | str | None:
        if person in self._cache:
            return self._cache[person]
        raw = self.states.get(person)
        entry: PersonState | str | None = None
        if isinstance(raw, Mapping) and FORWARD in raw:
            entry = str(raw[FORWARD])
        elif raw:
            try:
                entry = PersonState.from_dict(raw)
            except ProfileError as exc:
                log.warning("person state of %s dropped: %s", person, exc)
                del self.states[person]
        self._cache[person] = entry
        return entry

    def _forward_of(self, person: str) -> str | None:
        entry = self._entry(person)
        return entry if isinstance(entry, str) else None

    def _load(self, person: str) -> PersonState | None:
        entry = self._entry(person)
        return entry if isinstance(entry, PersonState) else None

    def _put(self, person: str, entry: PersonState | str | None, partition: int) -> None:
        self._cache[person] = entry
        self._dirty[person] = partition

    def flush(self) -> list[Out]:
        """Write the persons changed since the last flush to the table, once each, and
        return the PersonProfile of each person whose profile changed (the agent calls it
        after each batch, before the batch's offsets can be committed)."""
        out: list[Out] = []
        for person in sorted(self._profiles):
            state = self._cache.get(person)
            if isinstance(state, PersonState):
                record = self.audiences.profile_record(state, state.next_version())
                out.append(
                    self._out(self.topics.profiles.name, person, self._encode_profile(record))
                )
        self._profiles.clear()
        for person, partition in self._dirty.items():
            self._count_write(person)
            entry = self._cache.get(person)
            if entry is None:
                if person in self.states:
                    del self.states[person]
            elif isinstance(entry, str):
                self.states[person] = {FORWARD: entry, _PARTITION: partition}
            else:
                self.states[person] = {**entry.to_dict(), _PARTITION: partition}
        self._dirty.clear()
        self._cache.clear()
        self._snapshot()
        return out

    def _count_write(self, key: str) -> None:
        p = partition_for(self._changelog_key(key), self.topics.person_signals.partitions)
        self._written[p] = self._written.get(p, 0) + 1

    def _snapshot(self) -> None:
        """Write each changelog partition that has outgrown its live keys (by
        ``snapshot_min_records`` and twice its keys) whole again, between a start and an
        end marker: the persistent broker's janitor deletes what precedes a framed
        snapshot's start (:func:`pipeline.agents.snapshots.marked_floor`)."""
        if self.snapshot_min_records <= 0:
            return
        n = self.topics.person_signals.partitions
        for p, written in sorted(self._written.items()):
            if written < max(self.snapshot_min_records, self._snapshot_checked.get(p, 0)):
                continue
            start, end = self._frame[p]
            keys = [
                k
                for k in list(self.states.keys())
                if k not in (start, end) and partition_for(self._changelog_key(str(k)), n) == p
            ]
            if written <= 2 * len(keys):
                self._snapshot_checked[p] = 2 * len(keys) + 1
                continue
            token = uuid.uuid4().hex
            self.states[start] = token
            for key in keys:
                self.states[key] = self.states[key]
            self.states[end] = token
            self._written[p] = 0
            self._snapshot_checked.pop(p, None)
            self.snapshots += 1

    def _store(self, state: PersonState, partition: int) -> None:
        self._put(state.person_id, state, partition)
        due = self.audiences.next_due(state)
        if due is not None:
            heapq.heappush(self._heaps.setdefault(partition, []), (due, state.person_id))

    def _emit(
        self, state: PersonState, changes: Iterable[Change], profile_changed: bool, out: list[Out]
    ) -> None:
        person = state.person_id
        for change in changes:
            self.changes += 1
            out.append(
                self._out(
                    self.topics.audiences.name, person, self._encode_change(change.to_record())
                )
            )
        if profile_changed and state.profile.signals:
            self._profiles.add(person)  # one PersonProfile per person and batch, at flush

    def _out(
        self,
        topic: str,
        person: str,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> Out:
        key = person.encode()
        spec = {
            self.topics.person_signals.name: self.topics.person_signals,
            self.topics.profiles.name: self.topics.profiles,
            self.topics.audiences.name: self.topics.audiences,
        }[topic]
        return Out(topic, key, value, headers, partition_for(key, spec.partitions))
