"""Profiles and audiences as Faust agents: person signals in, profiles and segment changes out.

:class:`AudienceStep` is the processing (decode, call the pure core of
:mod:`pipeline.core.audiences`, encode), testable with plain dicts.
:func:`register_audience_agents` wires it into the worker's Faust app as the agent
``audiences`` with the Faust table ``audience-persons`` (one entry per person, changelog
partitioned like ``journeys.person-signals``), and turns the app's Kafka client on.

The agent consumes ``journeys.person-signals``, keyed by person: one compact record per
cart, order, engagement, app or store event (from the journey stage), and the ``merge``
and ``forget`` controls that :class:`IdentityRelay`, a batch-engine step on
``journeys.identity-changes``, derives from MERGE and FORGET changes (the many MAP
changes never reach Faust). A ``merge`` control goes to the absorbed person's
partition, which leaves a forward, makes the absorbed person exit its segments and
hands its state over to the survivor (``handover``), as the journey stage does.
Outputs: ``journeys.profiles`` (PersonProfile) and ``journeys.audiences``
(AudienceChange). See ``docs/segments.md``, and ``docs/extending.md`` for agents of
one's own.
"""

from __future__ import annotations

import heapq
import importlib
import json
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from pipeline.agents import faust_fixes
from pipeline.agents.engine import Stage
from pipeline.agents.messages import Out
from pipeline.agents.output import OutputProducer
from pipeline.agents.snapshots import SNAPSHOT_END, SNAPSHOT_START
from pipeline.core.audiences import Audiences, Change, PersonState
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.profiles import ProfileError, Signal
from pipeline.core.segments import SegmentRules
from pipeline.serde import AvroSerde, SerdeError
from pipeline.settings import Settings
from pipeline.topics import (
    CONTROL_HEADER,
    FORGET_CONTROL,
    HANDOVER_CONTROL,
    MERGE_CONTROL,
    Topics,
)

log = logging.getLogger(__name__)

#: Table keys of the stage's own bookkeeping (never a person id).
WATERMARK_KEY = "__watermark__:{partition}"
#: The table key of the record that ends a changelog partition before recovery.
RECOVERY_FENCE_KEY = "__recovery-fence__:{partition}"
_RESERVED = "__"
#: A table entry ``{FORWARD: survivor}`` marks a person absorbed by a merge.
FORWARD = "forward"
MAX_HANDOVER_HOPS = 16
#: The table entry's partition (to rebuild the deadline heap after a restart).
_PARTITION = "_p"
#: Control that moves an idle partition's clock to the newest signal time of the others.
TICK_CONTROL = b"tick"
TICK_KEY = b"__tick__"
#: The partition's clock is written to the table when it moved this much (event time).
_SAVE_WATERMARK_MS = 60_000


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


class AudienceStep:
    """One person signal or identity change in; profiles, audience changes and controls out."""

    def __init__(
        self,
        serde: AvroSerde,
        topics: Topics,
        states: MutableMapping[str, Any],
        rules: SegmentRules | None = None,
        grace_s: float = 0.0,
        snapshot_min_records: int = 0,
        changelog_key: Callable[[str], bytes] = str.encode,
    ) -> None:
        self.topics = topics
        self.serde = serde
        self.states = states
        self.audiences = Audiences(rules)
        self.lateness_ms = self.audiences.rules.allowed_lateness_ms
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._watermarks: dict[int, int] = {}
        self._active: dict[int, float] = {}
        self._saved: dict[int, int] = {}
        #: (wall time, newest signal time) of each partition, for the grace period.
        self.grace_s = grace_s
        self._history: dict[int, deque[tuple[float, int]]] = {}
        self._settled: dict[int, int] = {}
        #: The newest signal time this worker saw (ticks of a quiet stream go no further).
        self._newest = 0
        self._encode_signal = serde.encoder("PersonSignal")
        self._encode_profile = serde.encoder("PersonProfile")
        self._encode_change = serde.encoder("AudienceChange")
        self._encode_dead = serde.encoder("DeadLetter")
        #: Person entries read or written in the current batch (a state, a survivor's id
        #: for a forward, None once deleted), and the partition of each one written.
        self._cache: dict[str, PersonState | str | None] = {}
        self._dirty: dict[str, int] = {}
        self._profiles: set[str] = set()
        partitions = topics.person_signals.partitions
        self._mark_keys = [watermark_key(p, partitions) for p in range(partitions)]
        #: Snapshots that bound the table's changelog on a broker without compaction:
        #: records written per changelog partition since its last one, the count from
        #: which it is looked at again, and the keys that frame one. A key's changelog
        #: partition is the CRC32 of the key as the table serializes it.
        self.snapshot_min_records = snapshot_min_records
        self._changelog_key = changelog_key
        self._written: dict[int, int] = {}
        self._snapshot_checked: dict[int, int] = {}
        self._frame = [
            (
                reserved_key(SNAPSHOT_START, p, partitions, changelog_key),
                reserved_key(SNAPSHOT_END, p, partitions, changelog_key),
            )
            for p in range(partitions)
        ]
        self.snapshots = 0
        #: Counters for ``make bench`` and the logs.
        self.processed = 0
        self.changes = 0

    # -- entry point ---------------------------------------------------------------------

    def process(
        self,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        control: bytes | None = None,
    ) -> list[Out]:
        self.processed += 1
        if value is None:
            return []  # a compaction tombstone
        try:
            if control is not None:
                return self._control(control, value, partition)
            if topic == self.topics.identity_changes.name:
                return self._identity_change(self.serde.decode(value, expect="IdentityChange"))
            rec = self.serde.decode(value, expect="PersonSignal")
            return self._signal(Signal.from_record(rec), rec, partition)
        except (SerdeError, ProfileError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
            dead = dead_letter_record(
                "pipeline", "audiences", str(exc), value, None, topic, partition, offset
            )
            return [Out(self.topics.dead_letters.name, b"pipeline", self._encode_dead(dead))]

    def release(self, partition: int) -> None:
        """This worker no longer holds *partition*: forget what memory holds for it."""
        self._heaps.pop(partition, None)
        self._watermarks.pop(partition, None)
        self._active.pop(partition, None)
        self._saved.pop(partition, None)
        self._history.pop(partition, None)
        self._settled.pop(partition, None)
        # Its changelog partition too: no snapshot of it until this worker writes it again.
        self._written.pop(partition, None)
        self._snapshot_checked.pop(partition, None)

    # -- signals -------------------------------------------------------------------------

    def _signal(self, signal: Signal, rec: dict[str, Any], partition: int) -> list[Out]:
        person = signal.person_id
        if not person or person.startswith(_RESERVED):
            raise ValueError("person_id: required on person-signals")
        survivor = self._forward_of(person)
        if survivor:  # sent before its person was absorbed: on to the survivor
            rec["person_id"] = survivor
            return [self._out(self.topics.person_signals.name, survivor, self._encode_signal(rec))]
        clock = self._clock(partition, signal.at_ms)
        self._active[partition] = time.monotonic()
        self._newest = max(self._newest, signal.at_ms)
        out: list[Out] = []
        state = self._load(person) or PersonState(person)
        result = self.audiences.add(state, signal, clock)
        if not result.duplicate:
            self._emit(state, result.changes, result.profile_changed, out)
            self._store(state, partition)
        self._due(partition, clock, out)
        return out

    def _clock(self, partition: int, at_ms: int) -> int:
        """The partition's newest signal time (kept in the table) less the lateness."""
        current = self._watermarks.get(partition)
        if current is None:
            current = int(self.states.get(self._mark_keys[partition]) or 0)
            self._saved[partition] = current
            self._load_heap(partition)
        if at_ms > current:
            if at_ms - self._saved.get(partition, 0) >= _SAVE_WATERMARK_MS:
                # Kept in the table now and then (a restart resumes a little behind,
                # which only delays entries), not with every signal.
                self.states[self._mark_keys[partition]] = at_ms
                self._count_write(self._mark_keys[partition])
                self._saved[partition] = at_ms
            current = at_ms
        self._watermarks[partition] = current
        if not self.grace_s:
            return current - self.lateness_ms
        # The clock trails the partition's newest signal by `grace_s` of wall time as
        # well: a merge or a signal still in flight through the other stages (a replay
        # runs hours of event time in a second) arrives before its time is decided.
        now = time.monotonic()
        history = self._history.setdefault(partition, deque())
        if not history or history[-1][1] < current:
            history.append((now, current))
        settled = self._settled.get(partition, 0)
        while history and now - history[0][0] >= self.grace_s:
            settled = history.popleft()[1]
        self._settled[partition] = settled
        return settled - self.lateness_ms

    def behind(self, partition: int) -> bool:
        """Whether *partition*'s clock still waits for its grace period."""
        return bool(self._history.get(partition))

    def ticks(self, idle_s: float, now: float | None = None) -> list[Out]:
        """Tick controls for the partitions that had no signal for *idle_s* (wall time):
        each moves its partition's clock up to the newest signal time of the others, so a
        quiet partition holds no abandoned cart back (a partition never seen is left).
        When every partition is quiet, the clocks move to the newest signal itself: the
        last hour of a stream that stopped is not held back either (a signal that then
        arrives within the lateness is handled as late)."""
        now = time.monotonic() if now is None else now
        newest = max(self._watermarks.values(), default=0)
        quiet = all(now - self._active.get(p, 0.0) >= idle_s for p in self._watermarks)
        if quiet and self._newest:
            newest = max(newest, self._newest + self.lateness_ms)
        out: list[Out] = []
        for partition, mark in sorted(self._watermarks.items()):
            waiting = mark < newest or self.behind(partition)
            if waiting and now - self._active.get(partition, 0.0) >= idle_s:
                self._active[partition] = now
                out.append(
                    Out(
                        self.topics.person_signals.name,
                        TICK_KEY,
                        str(max(newest, mark)).encode(),
                        ((CONTROL_HEADER, TICK_CONTROL),),
                        partition,
                    )
                )
        return out

    def _due(self, partition: int, clock: int, out: list[Out]) -> None:
        """Persons whose pending signals or rule windows the clock has passed."""
        heap = self._heaps.setdefault(partition, [])
        done: set[str] = set()
        while heap and heap[0][0] <= clock:
            person = heapq.heappop(heap)[1]
            if person in done:
                continue
            done.add(person)
            state = self._load(person)
            if state is None:
                continue
            result = self.audiences.advance(state, clock)
            self._emit(state, result.changes, result.profile_changed, out)
            self._store(state, partition)

    def _load_heap(self, partition: int) -> None:
        heap = self._heaps.setdefault(partition, [])
        for person, raw in list(self.states.items()):
            if str(person).startswith(_RESERVED) or not isinstance(raw, Mapping):
                continue
            if raw.get(_PARTITION) != partition or FORWARD in raw:
                continue
            try:
                due = self.audiences.next_due(PersonState.from_dict(raw))
            except ProfileError as exc:
                log.warning("person state of %s unreadable: %s", person, exc)
                continue
            if due is not None:
                heapq.heappush(heap, (due, str(person)))

    # -- identity changes and controls ----------------------------------------------------

    def _identity_change(self, change: dict[str, Any]) -> list[Out]:
        kind = str(change["kind"])
        if kind == "MERGE" and change.get("absorbed_person_id"):
            absorbed = str(change["absorbed_person_id"])
            payload = json.dumps({"survivor": str(change["person_id"]), "absorbed": absorbed})
            return [
                self._out(
                    self.topics.person_signals.name,
                    absorbed,
                    payload.encode(),
                    ((CONTROL_HEADER, MERGE_CONTROL),),
                )
            ]
        if kind == "FORGET":
            person = str(change["person_id"])
            self._put(
                person, None, partition_for(person.encode(), self.topics.person_signals.partitions)
            )
            log.info("profile of forgotten person %s dropped", person)
        return []

    def _control(self, control: bytes, value: bytes, partition: int) -> list[Out]:
        payload = json.loads(value)
        if control == TICK_CONTROL:
            out: list[Out] = []
            self._due(partition, self._clock(partition, int(payload)), out)
            return out
        if control == MERGE_CONTROL:
            return self._hand_over(str(payload["survivor"]), str(payload["absorbed"]))
        if control == HANDOVER_CONTROL:
            return self._take_over(payload, partition)
        if control == FORGET_CONTROL:
            return self._identity_change({"kind": "FORGET", "person_id": payload["person"]})
        raise ValueError(f"unknown control {control!r}")

    def _hand_over(self, survivor: str, absorbed: str) -> list[Out]:
        """On the absorbed person's partition: forward, exit every segment, send the state."""
        if survivor == absorbed:
            return []
        state = self._load(absorbed)
        out: list[Out] = []
        raw = None
        if state is not None:
            changes = self.audiences.exit_all(state, f"merged into {survivor}")
            self._emit(state, changes, False, out)
            record = self.audiences.profile_record(state, state.next_version())
            record["merged_into"] = survivor
            out.append(self._out(self.topics.profiles.name, absorbed, self._encode_profile(record)))
            raw = state.to_dict()
        partition = partition_for(absorbed.encode(), self.topics.person_signals.partitions)
        self._put(absorbed, survivor, partition)
        payload = {"survivor": survivor, "absorbed": absorbed, "state": raw}
        out.append(
            self._out(
                self.topics.person_signals.name,
                survivor,
                json.dumps(payload, separators=(",", ":")).encode(),
                ((CONTROL_HEADER, HANDOVER_CONTROL),),
            )
        )
        return out

    def _take_over(self, payload: dict[str, Any], partition: int) -> list[Out]:
        """On the survivor's partition: join the absorbed state (see the journey stage's
        ``_take_over`` for reversed merges and chains of forwards)."""
        survivor, absorbed = str(payload["survivor"]), str(payload["absorbed"])
        further = self._forward_of(survivor)
        if further == absorbed:
            self._put(survivor, None, partition)
            further = None
        if further:
            hops = int(payload.get("hops", 0))
            if hops < MAX_HANDOVER_HOPS:
                payload = {**payload, "survivor": further, "hops": hops + 1}
                return [
                    self._out(
                        self.topics.person_signals.name,
                        str(further),
                        json.dumps(payload, separators=(",", ":")).encode(),
                        ((CONTROL_HEADER, HANDOVER_CONTROL),),
                    )
                ]
            self._put(survivor, None, partition)
        if payload.get("state") is None:
            return []
        theirs = PersonState.from_dict(payload["state"])
        mine = self._load(survivor) or PersonState(survivor)
        clock = self._watermarks.get(partition, 0) - self.lateness_ms
        result = self.audiences.merge(mine, theirs, max(clock, mine.evaluated_ms))
        out: list[Out] = []
        self._emit(mine, result.changes, result.profile_changed, out)
        self._store(mine, partition)
        return out

    # -- state and outputs ---------------------------------------------------------------

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


class IdentityRelay:
    """An engine step on ``journeys.identity-changes``: MERGE and FORGET become controls
    on ``journeys.person-signals`` for the audiences agent; the many MAP changes stop
    here, so Faust (about 60 µs per event) never sees them."""

    def __init__(self, serde: AvroSerde, topics: Topics) -> None:
        self.topics = topics
        self._decode = serde.decode
        self._partitions = topics.person_signals.partitions

    def process(
        self,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        _upstream: bytes | None = None,
        _control: bytes | None = None,
    ) -> list[Out]:
        if value is None:
            return []
        try:
            change = self._decode(value, expect="IdentityChange")
        except SerdeError as exc:  # the sink dead-letters it; nothing to relay
            log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
            return []
        kind = str(change["kind"])
        if kind == "MERGE" and change.get("absorbed_person_id"):
            person = str(change["absorbed_person_id"])
            body = {"survivor": str(change["person_id"]), "absorbed": person}
            control = MERGE_CONTROL
        elif kind == "FORGET":
            person = str(change["person_id"])
            body, control = {"person": person}, FORGET_CONTROL
        else:
            return []
        key = person.encode()
        return [
            Out(
                self.topics.person_signals.name,
                key,
                json.dumps(body, separators=(",", ":")).encode(),
                ((CONTROL_HEADER, control),),
                partition_for(key, self._partitions),
            )
        ]


def _control_of(headers: Any) -> bytes | None:
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in items:
        if name == CONTROL_HEADER:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


Send = Callable[[Out], Awaitable[Any]]


def register_audience_agents(
    app: Any, settings: Settings, serde: AvroSerde, topics: Topics, rules: SegmentRules
) -> AudienceStep | None:
    """Add the ``audiences`` agent and its table to the worker's Faust *app*, and turn on
    the app's Kafka consumer and producer (for the agents only: the batch engine keeps
    its own clients). With ``JOURNEYS_AUDIENCES=false`` only the user's agents are added,
    and Kafka stays off when there are none."""
    from faust.serializers import codecs

    faust_fixes.apply()  # table recovery on the embedded broker (see the module)
    if not settings.audiences and not settings.agent_modules.strip():
        return None
    app.boot_strategy.enable_kafka = True
    conf = app.conf
    conf.topic_partitions = settings.partitions
    conf.topic_replication_factor = settings.replication_factor
    conf.broker_session_timeout = settings.session_timeout_s
    conf.broker_heartbeat_interval = max(0.5, settings.session_timeout_s / 6)
    conf.consumer_auto_offset_reset = "earliest"
    # Tansu's high watermark lags behind multi-record batches: the check would refuse
    # to recover a table after kill -9 (see docs/segments.md).
    conf.recovery_consistency_check = False
    conf.producer_linger_ms = 20
    conf.producer_partitioner = crc32_partitioner

    if not settings.audiences:
        load_agent_modules(app, settings, serde, topics)
        return None
    states = app.Table(
        "audience-persons",
        default=None,
        partitions=topics.person_signals.partitions,
        key_type=str,  # raw keys, JSON values (the app's default serializers)
        # The changelog partition comes from the key (CRC32, as the signals'), not from
        # the current event: the agent writes its batch's persons after the batch.
        use_partitioner=True,
    )
    # Before the table recovers (the worker has not started): see fence_changelog.
    fence_changelog(
        settings,
        f"{app.conf.id}-{states.name}-changelog",
        topics.person_signals.partitions,
        lambda key: codecs.dumps(states.key_serializer, key),
        lambda value: codecs.dumps(states.value_serializer, value),
    )
    step = AudienceStep(
        serde,
        topics,
        states,
        rules,
        grace_s=settings.audience_grace_s,
        snapshot_min_records=settings.snapshot_min_records,
        changelog_key=lambda key: unquoted(codecs.dumps(states.key_serializer, key)),
    )
    names = [topics.person_signals.name]
    service = getattr(app, "engine", None)
    if service is not None:  # merges and forgets reach the agent as controls
        relay = IdentityRelay(serde, topics)
        service.engine.stage(Stage(topics.identity_changes.name, relay.process))
    else:  # an app without the batch engine: the agent reads the changes itself
        names.append(topics.identity_changes.name)
    source = app.topic(
        *names,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.person_signals.partitions,
    )
    # Outputs go through librdkafka (a few µs each, against tens for Faust's aiokafka
    # producer); Faust flushes its producer before it commits the agent's offsets, and
    # that flush now waits for these outputs too, so no offset runs ahead of them.
    output = OutputProducer(settings.kafka_config())
    producer = app.producer
    faust_flush = producer.flush

    async def flush_both() -> None:
        await faust_flush()
        output.flush_sync()

    producer.flush = flush_both

    @app.agent(source, name="audiences")
    async def audiences(stream: Any) -> None:
        async for events in stream.take_events(100, within=0.05):
            for event in events:
                msg = event.message
                outs = step.process(
                    event.value, msg.topic, msg.partition, msg.offset, _control_of(msg.headers)
                )
                for out in outs:
                    output.send(out)
            for out in step.flush():  # each changed person written once per batch
                output.send(out)

    @app.task
    async def _larger_producer_buffer() -> None:
        # The table's changelog goes through Faust's producer: no "buffer full" stalls.
        app.producer.buffer.max_messages = 10_000

    @app.timer(interval=settings.audience_idle_s)
    async def _tick() -> None:
        for out in step.ticks(settings.audience_idle_s):
            output.send(out)

    @app.on_partitions_revoked.connect
    async def _released(_app: Any, revoked: Any, **_kw: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.person_signals.name:
                step.release(tp.partition)

    load_agent_modules(app, settings, serde, topics)
    return step


def load_agent_modules(app: Any, settings: Settings, serde: AvroSerde, topics: Topics) -> None:
    """Call ``register(app, settings, serde, topics)`` of every module named in
    ``JOURNEYS_AGENT_MODULES``: the user's own agents, in the same Faust app."""
    for name in (n.strip() for n in settings.agent_modules.split(",")):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"JOURNEYS_AGENT_MODULES: cannot import {name!r}: {exc}") from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(
                f"JOURNEYS_AGENT_MODULES: {name} has no register(app, settings, serde, topics)"
            )
        register(app, settings, serde, topics)
        log.info("agents of %s registered", name)
