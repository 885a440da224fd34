"""The audiences agent's processing without Faust: :class:`AudienceStep` decodes person
signals and controls, calls the pure core of :mod:`pipeline.core.audiences` and encodes
profiles, audience changes and controls, testable with plain dicts as its table;
:class:`IdentityRelay`, a batch-engine step, turns MERGE and FORGET identity changes into
controls for it (``docs/segments.md``)."""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from pipeline.agents.audience_table import (
    _PARTITION,
    FORWARD,
    PersonTable,
    partition_for,
    reserved_key,
    watermark_key,
)
from pipeline.agents.messages import Out
from pipeline.agents.snapshots import SNAPSHOT_END, SNAPSHOT_START
from pipeline.core.audiences import Audiences, PersonState
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.profiles import ProfileError, Signal
from pipeline.core.segments import SegmentRules
from pipeline.serde import AvroSerde, SerdeError
from pipeline.topics import (
    CONTROL_HEADER,
    FORGET_CONTROL,
    HANDOVER_CONTROL,
    MERGE_CONTROL,
    Topics,
)

log = logging.getLogger(__name__)

_RESERVED = "__"
MAX_HANDOVER_HOPS = 16
#: Control that moves an idle partition's clock to the newest signal time of the others.
TICK_CONTROL = b"tick"
TICK_KEY = b"__tick__"
#: The partition's clock is written to the table when it moved this much (event time).
_SAVE_WATERMARK_MS = 60_000


class AudienceStep(PersonTable):
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
