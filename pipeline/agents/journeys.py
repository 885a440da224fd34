"""The journey stage: per-person journeys, attribution of each conversion, model learning.

Thin shells around the pure core (:mod:`pipeline.core.journeys`,
:mod:`pipeline.core.attribution`): decode, call the core, encode. The Faust app wires
them to topics and tables; tests drive them with plain dicts.

* :class:`JourneyStep` consumes ``journeys.person-touchpoints`` (keyed by person), keeps
  each person's :class:`~pipeline.core.journeys.JourneyState` in a table, and emits
  closed journeys, their paths (for the data-driven models) and, for each conversion,
  the credit of all eight models, as soon as the conversion is processed. A late event
  joins its journey and every journey it changes is emitted again (``version + 1``);
  only an event too old to change any answer becomes a dead letter.
* :class:`ModelLearner` consumes ``journeys.closed-paths`` (one partition: one learner),
  keeps path counts in a table, refits ``markov`` and ``shapley`` every
  ``refit_every`` paths and publishes the snapshots. Until the first snapshot exists
  their credit falls back to ``linear`` (``model_version`` says ``bootstrap``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.core.attribution import (
    DATA_DRIVEN_MODELS,
    DEFAULT_CONFIG,
    MODELS,
    AttributionConfig,
    AttributionError,
    ModelSnapshot,
    attribute_conversion,
    fit_snapshot,
    snapshot_from_record,
)
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.eligibility import counts_for_journeys
from pipeline.core.identity import IdentityRules
from pipeline.core.journeys import (
    ClosedJourney,
    JourneyBuilder,
    JourneyError,
    JourneyRules,
    JourneyState,
)
from pipeline.core.model import Touchpoint, to_millis
from pipeline.core.paths import PathRow, PathStats
from pipeline.core.profiles import classify
from pipeline.serde import AvroSerde, SerdeError
from pipeline.topics import (
    CONTROL_HEADER,
    FORGET_CONTROL,
    HANDOVER_CONTROL,
    MERGE_CONTROL,
    MOVE_CONTROL,
    Topics,
)

log = logging.getLogger(__name__)

WATERMARK_KEY = "__watermark__:{partition}"
#: Keys of this stage's own bookkeeping in the state table (never a person id).
_RESERVED = "__"
#: Table key of an absorbed person: its survivor (set when the merge control arrives).
FORWARD_KEY = "__forward__:{person}"
#: A hand-over follows at most this many forwards (a chain of merges); more means a
#: cycle of reversed merges, which the survivor it has reached then ends.
MAX_HANDOVER_HOPS = 16
BOOTSTRAP_VERSION = "bootstrap"


def route_key(identifiers: Iterable[Mapping[str, Any]], rules: IdentityRules) -> str | None:
    """The identifier that decides an event's person, by the identity rules' priority
    (blocklisted values skipped), as a short hash: what :meth:`JourneyBuilder.split`
    matches when the identity owner moves identifiers to another person."""
    best: tuple[int, str, str] | None = None
    for ident in identifiers:
        type_, value = str(ident["type"]), str(ident["value"])
        if rules.is_blocked(value):
            continue
        candidate = (rules.rank(type_), type_, value)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        return None
    return hashlib.blake2b(f"{best[1]}:{best[2]}".encode(), digest_size=6).hexdigest()


class SnapshotCache:
    """The latest snapshot of each data-driven model.

    *table* maps a model to ``{"version", "snapshot_json", "computed_ms"}``. The model
    learner writes it when it refits (so the worker that learns sees its snapshot at
    once), and every worker follows ``journeys.attribution-models`` into it
    (:meth:`offer`), so all workers credit with the newest snapshot.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self._parsed: dict[str, tuple[str, ModelSnapshot]] = {}

    def offer(self, record: dict[str, Any]) -> None:
        """An AttributionModel record: kept if it is newer than the model's current one.

        The snapshot is parsed here, where it enters: one that cannot be used raises
        :class:`~pipeline.core.attribution.AttributionError` (or ``ValueError``) for the
        caller to dead-letter, and never reaches :meth:`get`.
        """
        model = str(record["model"])
        computed_ms = to_millis(record["computed_at"])
        current = self.table.get(model)
        if current is not None and int(current.get("computed_ms", 0)) > computed_ms:
            return
        version = str(record["version"])
        snapshot = snapshot_from_record(json.loads(record["snapshot_json"]))
        self.table[model] = {
            "version": version,
            "snapshot_json": record["snapshot_json"],
            "computed_ms": computed_ms,
        }
        self._parsed[model] = (version, snapshot)

    def get(self, model: str) -> tuple[str, ModelSnapshot | None]:
        record = self.table.get(model)
        if not record:
            return BOOTSTRAP_VERSION, None
        version = str(record.get("version"))
        cached = self._parsed.get(model)
        if cached is None or cached[0] != version:
            try:
                cached = (version, snapshot_from_record(json.loads(record["snapshot_json"])))
            except (AttributionError, KeyError, TypeError, ValueError) as exc:
                log.warning("snapshot %s of %s unusable (%s): linear instead", version, model, exc)
                return BOOTSTRAP_VERSION, None
            self._parsed[model] = cached
        return cached


@dataclass
class _Deadlines:
    """Per-partition min-heap of (deadline ms, person) for idle persons' expiry."""

    heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)

    def push(self, partition: int, deadline: int | None, person: str) -> None:
        if deadline is not None:
            heapq.heappush(self.heaps.setdefault(partition, []), (deadline, person))

    def due(self, partition: int, watermark: int) -> list[str]:
        heap = self.heaps.get(partition, [])
        out: list[str] = []
        while heap and heap[0][0] <= watermark:
            person = heapq.heappop(heap)[1]
            if person not in out:
                out.append(person)
        return out


class JourneyStep:
    """One person-keyed touchpoint in, journeys / paths / credits / dead letters out."""

    def __init__(
        self,
        serde: AvroSerde,
        topics: Topics,
        states: MutableMapping[str, Any],
        snapshots: SnapshotCache,
        rules: JourneyRules | None = None,
        config: AttributionConfig = DEFAULT_CONFIG,
        required_consent: frozenset[str] = frozenset(),
        identity_rules: IdentityRules | None = None,
    ) -> None:
        self.required_consent = required_consent
        self.identity_rules = identity_rules or IdentityRules()
        self.topics = topics
        self.serde = serde
        self.states = states
        self.snapshots = snapshots
        self.builder = JourneyBuilder(rules or JourneyRules())
        self.config = config
        self.deadlines = _Deadlines()
        self._watermarks: dict[int, int] = {}
        self._deadlines_loaded: set[int] = set()
        self._encode_tp = serde.encoder("Touchpoint")
        self._encode_journey = serde.encoder("Journey")
        self._encode_path = serde.encoder("ClosedPath")
        self._encode_credit = serde.encoder("AttributionCredit")
        self._encode_dead = serde.encoder("DeadLetter")
        self._encode_signal = serde.encoder("PersonSignal")

    def _dead(self, error: str, value: bytes, topic: str, partition: int, offset: int) -> Out:
        log.warning("%s[%d]@%d: %s", topic, partition, offset, error)
        record = dead_letter_record(
            "pipeline", "journey", error, value, None, topic, partition, offset
        )
        return Out(self.topics.dead_letters.name, b"pipeline", self._encode_dead(record))

    def _watermark(self, partition: int, occurred_ms: int) -> int:
        """The newest event time of *partition*, kept in the table with the states (so it
        is checkpointed with them). It only decides when idle journeys are emitted."""
        current = self._watermarks.get(partition)
        if current is None:
            current = int(self.states.get(WATERMARK_KEY.format(partition=partition)) or 0)
        if occurred_ms > current:
            current = occurred_ms
            self.states[WATERMARK_KEY.format(partition=partition)] = current
        self._watermarks[partition] = current
        return current

    def _load(
        self, person: str, where: tuple[str, int, int], out: list[Out]
    ) -> JourneyState | None:
        """The stored state of *person*; an unreadable one goes to dead letters (with the
        raw state as payload) and the person starts afresh."""
        raw = self.states.get(person)
        if not raw:
            return None
        try:
            return JourneyState.from_dict(raw)
        except JourneyError as exc:
            payload = json.dumps(raw, separators=(",", ":"), default=str).encode()
            out.append(self._dead(f"journey state of {person} dropped: {exc}", payload, *where))
            del self.states[person]
            return None

    def process(
        self,
        value: bytes,
        topic: str,
        partition: int,
        offset: int,
        upstream: bytes | None = None,
        control: bytes | None = None,
    ) -> list[Out]:
        if control is not None:
            return self._control(control, value, topic, partition, offset)
        try:
            rec = self.serde.decode(value, expect="Touchpoint")
            tp = Touchpoint.from_record(rec)
        except SerdeError as exc:
            return [self._dead(str(exc), value, topic, partition, offset)]
        if not tp.person_id or tp.person_id.startswith(_RESERVED):
            return [
                self._dead(
                    "person_id: required on person-touchpoints", value, topic, partition, offset
                )
            ]
        if not counts_for_journeys(rec, self.required_consent):
            return []  # a bot, or no required consent: stored, but no touch nor journey
        survivor = self._forward(tp.person_id)[0]
        if survivor:
            # Routed before its person was absorbed: on to the survivor (whose stage
            # forwards again if the survivor was absorbed in turn).
            rec["person_id"] = survivor
            headers = ((UPSTREAM_HEADER, upstream),) if upstream else ()
            return [
                Out(
                    self.topics.person_touchpoints.name,
                    survivor.encode(),
                    self._encode_tp(rec),
                    headers,
                )
            ]
        if partition not in self._deadlines_loaded:
            self._load_deadlines(partition)
        watermark = self._watermark(partition, to_millis(tp.occurred_at))
        out: list[Out] = []
        where = (topic, partition, offset)
        state = self._load(tp.person_id, where, out)
        route = route_key(rec.get("identifiers") or (), self.identity_rules)
        result = self.builder.apply(state, tp, watermark, route)
        out += [self._dead(reason, value, topic, partition, offset) for _tp, reason in result.late]
        signal = None if result.late or result.duplicates else classify(tp)
        if signal is not None:  # a cart, order, engagement, app or store event: for profiles
            record = self._encode_signal(signal.to_record())
            out.append(Out(self.topics.person_signals.name, tp.person_id.encode(), record))
        closed = list(result.closed)
        if result.closed or not result.duplicates and not result.late:
            self._store(tp.person_id, result.state, partition)
        for person in self.deadlines.due(partition, watermark):
            if person == tp.person_id:
                continue
            idle = self._load(person, where, out)
            if idle is None:
                continue
            idle, expired = self.builder.expire(idle, watermark)
            closed.extend(expired)
            self._store(person, idle, partition)
        out.extend(self.emit(closed))
        return out

    def _load_deadlines(self, partition: int) -> None:
        """After a (re)start: the expiry deadlines of the states already in the table.

        The heap lives in memory; without this, a person idle since before a restart
        would only expire at their next event. Unreadable states are left for
        :meth:`_load` to dead-letter when their person is next seen.
        """
        self._deadlines_loaded.add(partition)
        loaded = 0
        for person, raw in list(self.states.items()):
            if not raw or str(person).startswith(_RESERVED):
                continue
            try:
                state = JourneyState.from_dict(raw)
            except JourneyError as exc:
                log.warning("journey state of %s unreadable: %s", person, exc)
                continue
            self.deadlines.push(partition, self.builder.next_deadline_ms(state), str(person))
            loaded += 1
        if loaded:
            log.info("partition %d: %d journey deadlines loaded from the table", partition, loaded)

    def release(self, partition: int) -> None:
        """Forget what is kept in memory for *partition*: this worker no longer holds it
        (another worker may advance its watermark and deadlines before it comes back)."""
        self._watermarks.pop(partition, None)
        self.deadlines.heaps.pop(partition, None)
        self._deadlines_loaded.discard(partition)

    # -- identity merges -----------------------------------------------------------------

    def _control(
        self, control: bytes, value: bytes, topic: str, partition: int, offset: int
    ) -> list[Out]:
        try:
            if control == MERGE_CONTROL:
                return self._hand_over(self.serde.decode(value, expect="IdentityChange"))
            if control == HANDOVER_CONTROL:
                return self._take_over(json.loads(value), partition)
            if control == MOVE_CONTROL:
                return self._move(self.serde.decode(value, expect="IdentityChange"), partition)
            if control == FORGET_CONTROL:
                return self._forget(value)
        except (SerdeError, JourneyError, ValueError, KeyError, TypeError) as exc:
            return [self._dead(f"{control!r} control: {exc}", value, topic, partition, offset)]
        return [self._dead(f"unknown control {control!r}", value, topic, partition, offset)]

    def _handover(self, person: str, payload: dict[str, Any]) -> Out:
        """A hand-over control to *person*'s partition (their state joins *person*)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return Out(
            self.topics.person_touchpoints.name,
            person.encode(),
            body,
            ((CONTROL_HEADER, HANDOVER_CONTROL),),
        )

    def _forward(self, person: str) -> tuple[str | None, int]:
        """The person *person* was absorbed into, and the identity version of that merge."""
        raw = self.states.get(FORWARD_KEY.format(person=person))
        if not raw:
            return None, -1
        if isinstance(raw, str):  # written before forwards carried versions
            return raw, 0
        return str(raw[0]), int(raw[1])

    def _hand_over(self, change: dict[str, Any]) -> list[Out]:
        """On the absorbed person's partition: leave a forward, send the state on.

        Merges carry the identity owner's processing-order ``version``; a forward keeps
        it, so that the newer of two merges between the same persons wins whatever the
        order their controls and hand-overs cross partitions in. A merge older than the
        absorbed person's own forward changes nothing. The hand-over goes even when the
        absorbed person has no state here: the survivor's partition must see it.
        """
        absorbed, survivor = str(change["absorbed_person_id"]), str(change["person_id"])
        version = int(change.get("version") or 0)
        if self._forward(absorbed)[1] > version:
            return []  # absorbed by a newer merge already: its state went there
        self.states[FORWARD_KEY.format(person=absorbed)] = [survivor, version]
        raw = self.states.get(absorbed)
        if raw is not None:
            del self.states[absorbed]
        payload = {"survivor": survivor, "absorbed": absorbed, "state": raw, "version": version}
        return [self._handover(survivor, payload)]

    def _move(self, change: dict[str, Any], partition: int) -> list[Out]:
        """On the partition of the person identifiers moved away from (a re-derived
        identity split them off): the events they decided go to their new person,
        with the journeys that vanish here (see :meth:`JourneyBuilder.split`)."""
        old, new = str(change["absorbed_person_id"]), str(change["person_id"])
        if str(change.get("rule") or "").startswith("super_node:"):
            # A shared device's events belong to the persons of their other identifiers,
            # which the device's move does not name: they stay (docs/journeys.md).
            return []
        routes = {
            key
            for ident in change.get("identifiers") or ()
            if (key := route_key([ident], self.identity_rules)) is not None
        }
        raw = self.states.get(old)
        if not raw or not routes:
            return []
        left, moved, closed = self.builder.split(JourneyState.from_dict(raw), routes)
        if moved is None:
            return []
        self._store(old, left, partition)
        payload = {
            "survivor": new,
            "absorbed": old,
            "state": moved.to_dict(),
            "version": int(change.get("version") or 0),
            "moved": True,
        }
        return [
            *self.emit(closed),
            self._handover(new, payload),
        ]

    def _take_over(self, payload: dict[str, Any], partition: int) -> list[Out]:
        """On the survivor's partition: join the absorbed person's events, emit changes.

        If the survivor was itself absorbed by a *newer* merge, the state goes on to that
        person. A forward from an *older* merge is stale (the identity owner re-derived
        the survivor as live, e.g. B into A after A into B): it is dropped, and touchpoints
        and states stop at this person.
        """
        survivor = str(payload["survivor"])
        version = int(payload.get("version") or 0)
        further, forward_version = self._forward(survivor)
        if further is not None and forward_version > version and further != survivor:
            hops = int(payload.get("hops", 0))
            if hops < MAX_HANDOVER_HOPS:
                payload = {**payload, "survivor": further, "hops": hops + 1}
                return [self._handover(further, payload)]
            log.warning("hand-over to %s went round %d forwards; kept here", survivor, hops)
        if further is not None:
            log.info(
                "%s is live again (merge version %d after %d)", survivor, version, forward_version
            )
            del self.states[FORWARD_KEY.format(person=survivor)]
        if payload.get("state") is None:
            return []
        absorbed = JourneyState.from_dict(payload["state"])
        raw = self.states.get(survivor)
        mine = JourneyState.from_dict(raw) if raw else JourneyState(survivor)
        watermark = self._watermarks.get(partition, 0)
        merged, closed = self.builder.merge(mine, absorbed, watermark)
        self._store(survivor, merged, partition)
        return self.emit(closed)

    def _forget(self, value: bytes) -> list[Out]:
        """``journeys forget``: drop the state of the person the message names."""
        person = value.decode("utf-8")
        if person and person in self.states:
            del self.states[person]
            log.info("journey state of forgotten person %s dropped", person)
        return []

    def _store(self, person: str, state: JourneyState, partition: int) -> None:
        if state.is_empty():
            if person in self.states:
                del self.states[person]
            return
        self.states[person] = state.to_dict()
        self.deadlines.push(partition, self.builder.next_deadline_ms(state), person)

    def emit(self, closed: Iterable[ClosedJourney]) -> list[Out]:
        """The Journey, ClosedPath and (for a conversion) credit records of each change.

        A retracted journey sends its Journey record (``retracted``) and an empty path,
        which takes the journey's old path out of the learned models.
        """
        out: list[Out] = []
        for journey in closed:
            key = journey.person_id.encode()
            out.append(
                Out(self.topics.journeys.name, key, self._encode_journey(journey.to_record()))
            )
            path = {
                "journey_id": journey.journey_id,
                "path": list(journey.path),
                "converted": journey.converted,
                "revenue": float(journey.revenue or 0.0),
                "version": journey.version,
            }
            out.append(Out(self.topics.closed_paths.name, b"paths", self._encode_path(path)))
            if journey.converted and not journey.retracted:
                out.extend(
                    Out(self.topics.attribution.name, key, self._encode_credit(credit))
                    for credit in self.credits(journey)
                )
        return out

    def credits(self, journey: ClosedJourney) -> list[dict[str, Any]]:
        """The AttributionCredit records of every model for one converted journey."""
        rows: list[dict[str, Any]] = []
        revenue = float(journey.revenue or 0.0)
        for model in MODELS:
            version, snapshot = "rule", None
            if model in DATA_DRIVEN_MODELS:
                version, snapshot = self.snapshots.get(model)
            for credit in attribute_conversion(
                model,
                journey.touches,
                journey.ended_at,
                revenue,
                config=self.config,
                snapshot=snapshot,
            ):
                rows.append(
                    {
                        "conversion_event_id": journey.conversion_event_id or journey.journey_id,
                        "journey_id": journey.journey_id,
                        "person_id": journey.person_id,
                        "model": model,
                        "channel": credit.channel,
                        "campaign": credit.campaign,
                        "touch_position": credit.position,
                        "credit": credit.credit,
                        "revenue_credit": credit.revenue_credit,
                        "model_version": version,
                        "converted_at": journey.ended_at,
                        "version": journey.version,
                    }
                )
        return rows


class ModelLearner:
    """Learns the data-driven models from closed paths and publishes snapshots.

    ``counts`` maps ``"a > b > c"`` to ``[conversions, value, nulls]``; ``seen`` maps a
    journey id to what it contributed, so a re-attributed journey (higher version)
    replaces its old path instead of counting twice.
    """

    def __init__(
        self,
        serde: AvroSerde,
        topics: Topics,
        counts: MutableMapping[str, Any],
        seen: MutableMapping[str, Any],
        snapshots: SnapshotCache,
        refit_every: int = 200,
        config: AttributionConfig = DEFAULT_CONFIG,
    ) -> None:
        self.topics = topics
        self.counts = counts
        self.seen = seen
        self.snapshots = snapshots
        self.refit_every = refit_every
        self.config = config
        self.pending = 0
        self.paths_seen = 0
        self._encode_model = serde.encoder("AttributionModel")
        self._encode_dead = serde.encoder("DeadLetter")
        self._decode = serde.decode

    def add(self, value: bytes) -> None:
        """One closed path: counted, replacing the older version of its journey; an
        empty path (a retracted journey) only takes the older version out."""
        rec = self._decode(value, expect="ClosedPath")
        path = " > ".join(rec["path"])
        journey_id, version = str(rec["journey_id"]), int(rec["version"])
        previous = self.seen.get(journey_id)
        if previous is not None:
            if int(previous[0]) >= version:
                return
            if previous[1]:
                self._count(previous[1], bool(previous[2]), float(previous[3]), -1)
        elif not path:
            return
        if path:
            self._count(path, bool(rec["converted"]), float(rec["revenue"]), +1)
        self.seen[journey_id] = [version, path, rec["converted"], rec["revenue"]]
        self.pending += 1

    def _count(self, path: str, converted: bool, revenue: float, sign: int) -> None:
        acc = list(self.counts.get(path) or [0.0, 0.0, 0.0])
        if converted:
            acc[0] += sign
            acc[1] += sign * revenue
        else:
            acc[2] += sign
        if acc[0] <= 0 and acc[2] <= 0:
            if path in self.counts:
                del self.counts[path]
            return
        self.counts[path] = acc

    def due(self) -> bool:
        return self.pending >= self.refit_every

    def process(
        self,
        value: bytes,
        topic: str,
        partition: int,
        offset: int,
        _upstream: bytes | None = None,
        _control: bytes | None = None,
    ) -> list[Out]:
        """One closed path in; the snapshots out when a refit is due."""
        try:
            self.add(value)
        except SerdeError as exc:
            log.warning("%s[%d]@%d: %s", topic, partition, offset, exc)
            record = dead_letter_record(
                "pipeline", "learner", str(exc), value, None, topic, partition, offset
            )
            return [Out(self.topics.dead_letters.name, b"pipeline", self._encode_dead(record))]
        return self.refit() if self.due() else []

    def refit(self, now: datetime | None = None) -> list[Out]:
        """Fit both data-driven models on all paths so far; snapshot records out."""
        rows = [
            PathRow(tuple(path.split(" > ")), float(c), float(v), float(n))
            for path, (c, v, n) in self.counts.items()
            if c > 0 or n > 0
        ]
        self.pending = 0
        if not rows:
            return []
        stats = PathStats.from_rows(rows)
        paths_seen = int(stats.total_conversions + stats.total_nulls)
        now = now or datetime.now(UTC)
        out: list[Out] = []
        for model in DATA_DRIVEN_MODELS:
            snapshot = fit_snapshot(model, stats, self.config)
            record = snapshot.to_record()
            version = f"{model}-{paths_seen}-{to_millis(now)}"
            model_record = {
                "model": model,
                "version": version,
                "computed_at": now,
                "paths_seen": paths_seen,
                "conversions": float(stats.total_conversions),
                "weights": {str(k): float(v) for k, v in record.get("weights", {}).items()},
                "snapshot_json": json.dumps(record, separators=(",", ":")),
            }
            self.snapshots.offer(model_record)  # this worker credits with it at once
            out.append(
                Out(
                    self.topics.attribution_models.name,
                    model.encode(),
                    self._encode_model(model_record),
                )
            )
        log.info("refitted %s on %d paths", ", ".join(DATA_DRIVEN_MODELS), paths_seen)
        return out
