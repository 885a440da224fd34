"""Per-person customer journeys: a function of the person's set of events.

A *journey* is the ordered list of a person's touches up to a conversion (a converted
path) or up to its expiry (a null path). The rules (sessions, touches, conversions,
lookback, inactivity) are in :class:`~pipeline.core.journey_rules.JourneyRules`;
``docs/journeys.md`` has the worked example and the guarantee.

The state of a person keeps their events in event-time order (:class:`JourneyState`).
Journeys are what a replay of those events in time order gives, whatever order they
arrived in: an event after the newest one is applied incrementally, an earlier one
(late) makes the builder replay the person's events, and every journey whose content
changed is returned again with ``version + 1``; one that no longer exists (a null path
a late conversion absorbed) is returned *retracted*. A conversion is returned as soon
as it is applied, with the touches known then. Events older than the person's newest
less ``max_lateness`` cannot be placed any more: they are refused with a reason. Older
events become *final*: they are folded into a base state and their journeys are never
revised, which bounds the state. Pure and synchronous; the state is plain JSON.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pipeline.core.journey_rules import (
    CONVERSION,
    SESSION,
    TOUCH,
    JourneyConfigError,
    JourneyError,
    JourneyRules,
    parse_duration,
)
from pipeline.core.model import Touchpoint, from_millis

__all__ = [
    "CONVERSION",
    "SESSION",
    "TOUCH",
    "ClosedJourney",
    "JourneyBuilder",
    "JourneyConfigError",
    "JourneyError",
    "JourneyRules",
    "JourneyState",
    "StepResult",
    "Touch",
    "journey_id_for_conversion",
    "journey_id_for_null",
    "parse_duration",
]

#: Namespace of journey ids: ``uuid5(JOURNEY_NAMESPACE, "conversion:<event_id>")`` for a
#: converted journey (stable across identity merges, which change the person) and
#: ``uuid5(JOURNEY_NAMESPACE, "null:<event_id of the first touch>")`` for a null path.
JOURNEY_NAMESPACE = uuid.UUID("0b8f5a4e-7c61-5d0e-9f3a-2e4c6b1d8a70")

STATE_FORMAT = 2

KIND_SESSION = "session"
KIND_TOUCH = "touch"
KIND_CONVERSION = "conversion"
KIND_SYNTHETIC = "synthetic"

# Layout of the JSON lists kept in the state (compact: the state is stored per person).
# event:   [at_ms, event_id, flags, channel, campaign, revenue, route key | None,
#           source, device type, event type]
# touch:   [at_ms, event_id, channel, campaign, kind, source, device type]
# (a state written before the last three event fields and the last two touch fields
# existed is read with them empty)
# session: [touch_event_id, start_ms, last_ms, channel, campaign]
# replay:  [touches, session, last_conversion [at_ms, event_id] | None]
# emitted: {journey_id: [version, digest, started_ms, ended_ms, person_id, converted, retracted]}
_T, _ID, _CH, _CAMP, _KIND, _SRC, _DEV = 0, 1, 2, 3, 4, 5, 6
_E_FLAGS, _E_CH, _E_CAMP, _E_REV, _E_ROUTE, _E_SRC, _E_DEV, _E_TYPE = 2, 3, 4, 5, 6, 7, 8, 9
_EVENT_LEN, _TOUCH_LEN = 10, 7
_OLD_EVENT_LEN, _OLD_TOUCH_LEN = 7, 5  # before source, device (and event type) were kept
_S_LAST, _S_CH, _S_CAMP = 2, 3, 4
_V, _DIGEST, _START, _END, _PERSON, _CONV, _GONE = 0, 1, 2, 3, 4, 5, 6

_NO_TOUCH_CHANNELS = frozenset({"", "unassigned"})


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touch:
    """One touch of a path. ``kind`` is session, touch, conversion or synthetic;
    ``source`` and ``device`` are those of the event whose id the touch carries."""

    channel: str
    at: datetime
    event_id: str
    campaign: str | None = None
    kind: str = KIND_TOUCH
    source: str = ""
    device: str = ""


@dataclass(frozen=True, slots=True)
class ClosedJourney:
    """A finished journey: converted (with its credited touches) or a null path.

    ``version`` grows each time the journey's content changes (a late event, an
    identity merge); the latest version of a ``journey_id`` replaces the earlier ones.
    A ``retracted`` journey no longer exists (its touches now belong to another one).
    ``conversion_event_type`` and ``conversion_device`` describe the conversion event.
    """

    journey_id: str
    person_id: str
    started_at: datetime
    ended_at: datetime
    converted: bool
    conversion_event_id: str | None
    revenue: float
    touches: tuple[Touch, ...]
    version: int = 1
    retracted: bool = False
    conversion_event_type: str = ""
    conversion_device: str = ""

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(t.channel for t in self.touches)

    @property
    def touch_count(self) -> int:
        return len(self.touches)

    @property
    def hops(self) -> int:
        """Changes between consecutive channels: ``email > email > search`` has 1."""
        path = self.path
        return sum(1 for a, b in zip(path, path[1:], strict=False) if a != b)

    @property
    def days_to_convert(self) -> float | None:
        """Days from the first credited touch to the conversion (None for a null path)."""
        if not self.converted:
            return None
        return (self.ended_at - self.started_at).total_seconds() / 86400.0

    def to_record(self) -> dict[str, Any]:
        """The Avro record (``schemas/Journey.avsc``) of this journey."""
        return {
            "journey_id": self.journey_id,
            "person_id": self.person_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "converted": self.converted,
            "conversion_event_id": self.conversion_event_id,
            "revenue": self.revenue,
            "path": list(self.path),
            "touch_event_ids": [t.event_id for t in self.touches],
            "touch_times": [t.at for t in self.touches],
            "version": self.version,
            "retracted": self.retracted,
            "touch_sources": [t.source for t in self.touches],
            "touch_devices": [t.device for t in self.touches],
            "conversion_event_type": self.conversion_event_type,
            "conversion_device": self.conversion_device,
        }

    def digest(self) -> str:
        """What identifies the content (not the version): equal digests, same journey.
        Sources, devices and the conversion's type follow from the event ids."""
        content = [
            self.person_id,
            self.converted,
            self.conversion_event_id,
            self.revenue,
            [[t.channel, int(t.at.timestamp() * 1000), t.event_id, t.campaign, t.kind]
             for t in self.touches],
        ]  # fmt: skip
        raw = json.dumps(content, separators=(",", ":")).encode()
        return hashlib.blake2b(raw, digest_size=10).hexdigest()


def journey_id_for_conversion(conversion_event_id: str) -> str:
    return str(uuid.uuid5(JOURNEY_NAMESPACE, f"conversion:{conversion_event_id}"))


def journey_id_for_null(first_touch_event_id: str) -> str:
    return str(uuid.uuid5(JOURNEY_NAMESPACE, f"null:{first_touch_event_id}"))


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one event did: the updated state, the journeys it created, changed or
    retracted (``closed``), the events refused with a reason (``late``, to dead-letter)
    and redeliveries of events already applied (``duplicates``, a no-op)."""

    state: JourneyState
    closed: list[ClosedJourney]
    late: list[tuple[Touchpoint, str]]
    duplicates: list[Touchpoint]


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


def _new_replay() -> list[Any]:
    return [[], None, None]


class JourneyState:
    """The journey state of one person, as plain JSON-ready lists and dicts.

    ``events`` are the person's events not yet final, sorted by (time, event id);
    ``base`` is the replay state after the final ones and ``head`` after all of them;
    ``emitted`` is what was last returned for each journey still open to revision.
    The builder updates a state in place and returns it.
    """

    __slots__ = ("base", "base_key", "emitted", "events", "head", "person_id", "watermark_ms")

    def __init__(self, person_id: str, watermark_ms: int = 0) -> None:
        if not person_id:
            raise JourneyError("a journey state needs a person_id")
        self.person_id = person_id
        #: The largest watermark seen: trailing journeys idle past it are emitted.
        self.watermark_ms = watermark_ms
        self.events: list[list[Any]] = []
        self.base: list[Any] = _new_replay()
        #: ``[at_ms, event_id]`` of the newest final event (None: nothing is final).
        self.base_key: list[Any] | None = None
        self.head: list[Any] = _new_replay()
        self.emitted: dict[str, list[Any]] = {}

    @property
    def newest_ms(self) -> int | None:
        if self.events:
            return int(self.events[-1][_T])
        return None if self.base_key is None else int(self.base_key[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "person_id": self.person_id,
            "watermark_ms": self.watermark_ms,
            "events": self.events,
            "base": self.base,
            "base_key": self.base_key,
            "head": self.head,
            "emitted": self.emitted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyState:
        """A state read back; anything malformed is a :class:`JourneyError` naming it."""
        try:
            if data.get("format") != STATE_FORMAT:
                raise JourneyError(
                    f"journey state format {data.get('format')!r} is not {STATE_FORMAT}"
                )
            state = cls(str(data["person_id"]), int(data["watermark_ms"]))
            state.events = [_padded(e, _EVENT_LEN, _OLD_EVENT_LEN) for e in data["events"]]
            for event in state.events:
                if not isinstance(event[_T], int):
                    raise JourneyError(f"malformed event {event!r}")
            state.base = _check_replay(data["base"])
            state.head = _check_replay(data["head"])
            key = data.get("base_key")
            state.base_key = None if key is None else [int(key[0]), str(key[1])]
            state.emitted = {str(k): list(v) for k, v in dict(data["emitted"]).items()}
            for entry in state.emitted.values():
                if len(entry) != 7:
                    raise JourneyError(f"malformed emitted entry {entry!r}")
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise JourneyError(f"malformed journey state: {exc!r}") from exc
        return state

    def copy(self) -> JourneyState:
        """A deep copy (JSON structures only, so this is cheap and exact)."""
        return JourneyState.from_dict(json.loads(json.dumps(self.to_dict())))

    def is_empty(self) -> bool:
        return not (self.events or self.emitted or self.head[0] or self.base_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JourneyState) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"JourneyState(person_id={self.person_id!r}, events={len(self.events)}, "
            f"open_touches={len(self.head[0])}, emitted={len(self.emitted)})"
        )


def _padded(item: Any, length: int, old_length: int) -> list[Any]:
    """*item* as a list of *length*: one of *old_length*, written before its last text
    fields existed, gets them empty."""
    out = list(item)
    if len(out) not in (length, old_length):
        raise JourneyError(f"malformed state entry {item!r}")
    return out + [""] * (length - len(out))


def _check_replay(value: Any) -> list[Any]:
    touches, session, last = value
    if not isinstance(touches, list):
        raise JourneyError("malformed touches")
    if session is not None and len(session) != 5:
        raise JourneyError("malformed session")
    touches = [_padded(t, _TOUCH_LEN, _OLD_TOUCH_LEN) for t in touches]
    return [touches, None if session is None else list(session), last]


def _copy_replay(replay: list[Any]) -> list[Any]:
    touches, session, last = replay
    return [
        [list(t) for t in touches],
        None if session is None else list(session),
        None if last is None else list(last),
    ]


def _key(item: list[Any]) -> tuple[int, str]:
    return item[_T], item[_ID]


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------


class JourneyBuilder:
    """Keeps per-person journey states; every answer is a function of the event set."""

    def __init__(self, rules: JourneyRules | None = None) -> None:
        self.rules = rules if rules is not None else JourneyRules()

    # -- public API --------------------------------------------------------------------

    def apply(
        self,
        state: JourneyState | None,
        tp: Touchpoint,
        watermark_ms: int = 0,
        route: str | None = None,
    ) -> StepResult:
        """Apply one touchpoint of the state's person; *watermark_ms* (the partition's
        newest event time) only decides when an idle open journey is emitted as a null
        path; *route* names the identifier that decides the event's person (see
        :meth:`split`). Events that neither touch nor convert are ignored."""
        if state is None:
            if not tp.person_id:
                raise JourneyError(f"touchpoint {tp.event_id} has no person_id")
            state = JourneyState(tp.person_id)
        state.watermark_ms = max(state.watermark_ms, watermark_ms)
        flags = self.rules.classify(tp.source, tp.event_type)
        if not flags:
            return StepResult(state, [], [], [])
        occurred = tp.occurred_at
        if occurred.tzinfo is None or occurred.utcoffset() is None:
            reason = f"invalid_time: naive datetime {occurred.isoformat()}: a timezone is required"
            return StepResult(state, [], [(tp, reason)], [])
        at = int(occurred.timestamp() * 1000)
        campaign = tp.campaign.name if tp.campaign is not None else None
        revenue = float(tp.revenue) if tp.revenue is not None else 0.0
        event = [at, tp.event_id, flags, tp.channel, campaign, revenue, route,
                 tp.source, tp.device_type or "", tp.event_type]  # fmt: skip
        events = state.events
        i = bisect.bisect_left(events, (at, tp.event_id), key=_key)
        if i < len(events) and events[i][_ID] == tp.event_id:
            return StepResult(state, [], [], [tp])
        refusal = self._too_late(state, at, tp.event_id)
        if refusal is not None:
            return StepResult(state, [], [(tp, refusal)], [])
        if i == len(events):  # in order: the common case
            before = self._trailing_id(state.head)
            events.append(event)
            produced = self._step(state.head, event, state.person_id)
            changes = self._publish(state, produced, before)
        else:
            events.insert(i, event)
            changes = self._rebuild(state)
        changes += self._finalize_old(state)
        return StepResult(state, changes, [], [])

    def expire(
        self, state: JourneyState, watermark_ms: int
    ) -> tuple[JourneyState, list[ClosedJourney]]:
        """Move a state to *watermark_ms* with no new event: an open journey idle for
        longer than the inactivity window (plus ``allowed_lateness``) is emitted as a
        null path. It stays revisable: a late event can still continue it."""
        state.watermark_ms = max(state.watermark_ms, watermark_ms)
        before = self._trailing_id(state.head)
        return state, self._publish(state, [], before)

    def next_deadline_ms(self, state: JourneyState) -> int | None:
        """The smallest watermark at which :meth:`expire` would change *state*."""
        touches = state.head[0]
        if not touches:
            return None
        jid = journey_id_for_null(touches[0][_ID])
        entry = state.emitted.get(jid)
        if entry is not None and not entry[_GONE]:
            return None  # emitted already; a new event revises it
        return self._idle_deadline(touches)

    def merge(
        self, survivor: JourneyState, absorbed: JourneyState, watermark_ms: int = 0
    ) -> tuple[JourneyState, list[ClosedJourney]]:
        """Join the absorbed person's events into the survivor's and replay them.

        Every journey whose content changed (its person, at least, for the absorbed
        person's journeys) is returned with ``version + 1``; null paths that the joined
        timeline no longer has are returned retracted.
        """
        merged = JourneyState(
            survivor.person_id, max(survivor.watermark_ms, absorbed.watermark_ms, watermark_ms)
        )
        # The later of the two final points holds for the merged timeline (events of the
        # other person before it are final too; see docs/journeys.md).
        first, second = sorted(
            (survivor, absorbed), key=lambda s: (s.base_key is not None, s.base_key or [0, ""])
        )
        merged.base, merged.base_key = _copy_replay(second.base), second.base_key
        events: dict[str, list[Any]] = {}
        for st in (survivor, absorbed):
            for event in st.events:
                events.setdefault(event[_ID], list(event))
        floor = tuple(merged.base_key) if merged.base_key is not None else None
        merged.events = sorted(
            (e for e in events.values() if floor is None or tuple(e[:2]) > floor), key=_key
        )
        for st in (first, second):
            for jid, entry in st.emitted.items():
                mine = merged.emitted.get(jid)
                if mine is None or entry[_V] > mine[_V]:
                    merged.emitted[jid] = list(entry)
                elif entry[_V] == mine[_V] and entry[_DIGEST] != mine[_DIGEST]:
                    # Both emitted this version with other contents (a redelivered event
                    # routed to each person): emit above it, whatever the merged content.
                    mine[_DIGEST] = ""
        changes = self._rebuild(merged)
        changes += self._finalize_old(merged)
        return merged, changes

    def split(
        self, state: JourneyState, routes: set[str]
    ) -> tuple[JourneyState, JourneyState | None, list[ClosedJourney]]:
        """Take out the events whose route is in *routes* (identifiers that moved to
        another person): the state left, a state of the moved events for the other
        person's :meth:`merge` (None when nothing moved), and the left journeys' changes.

        Journeys that vanish from this person travel with the moved events (their
        emitted versions), so the other person revises or retracts them above those
        versions instead of this one retracting them.
        """
        moved = [e for e in state.events if e[_E_ROUTE] in routes]
        if not moved:
            return state, None, []
        state.events = [e for e in state.events if e[_E_ROUTE] not in routes]
        produced = self._replay(state)
        trailing = self._trailing(state)
        kept = {j.journey_id for j in produced} | ({trailing.journey_id} if trailing else set())
        vanished = [jid for jid, e in state.emitted.items() if not e[_GONE] and jid not in kept]
        changes = self._publish(state, produced, None)
        out = JourneyState(state.person_id, state.watermark_ms)
        out.events = moved
        out.emitted = {jid: state.emitted.pop(jid) for jid in vanished}
        return state, out, changes

    # -- incremental and full replay ---------------------------------------------------

    def _too_late(self, state: JourneyState, at: int, event_id: str) -> str | None:
        newest = state.newest_ms
        if newest is not None and at < newest - self.rules.max_lateness_ms:
            behind = timedelta(milliseconds=newest - at)
            return (
                f"too_late: occurred_at {from_millis(at).isoformat()} is {behind} before the "
                f"person's newest event {from_millis(newest).isoformat()} "
                f"(max lateness {self.rules.max_lateness})"
            )
        if state.base_key is not None and (at, event_id) <= tuple(state.base_key):
            return (
                f"too_late: occurred_at {from_millis(at).isoformat()} is before the person's "
                f"final events (the newest {self.rules.max_events} events are kept)"
            )
        return None

    def _replay(self, state: JourneyState) -> list[ClosedJourney]:
        """Replay every non-final event from the base; the journeys it closes."""
        head = _copy_replay(state.base)
        produced: list[ClosedJourney] = []
        for event in state.events:
            produced += self._step(head, event, state.person_id)
        state.head = head
        return produced

    def _rebuild(self, state: JourneyState) -> list[ClosedJourney]:
        """Replay the events; publish what changed, retract what vanished."""
        produced = self._replay(state)
        live = {jid for jid, entry in state.emitted.items() if not entry[_GONE]}
        return self._publish(state, produced, None, gone=live)

    def _finalize_old(self, state: JourneyState) -> list[ClosedJourney]:
        """Fold events past the horizon (or beyond ``max_events``) into the base."""
        events = state.events
        if not events:
            return []
        limit = events[-1][_T] - self.rules.horizon_ms
        drop = 0
        while drop < len(events) and events[drop][_T] < limit:
            drop += 1
        drop = max(drop, len(events) - self.rules.max_events)
        if drop <= 0:
            return []
        for event in events[:drop]:
            for journey in self._step(state.base, event, state.person_id):
                state.emitted.pop(journey.journey_id, None)  # final: never revised again
        state.base_key = [events[drop - 1][_T], events[drop - 1][_ID]]
        del events[:drop]
        return []

    def _publish(
        self,
        state: JourneyState,
        produced: list[ClosedJourney],
        before: str | None,
        gone: set[str] | None = None,
    ) -> list[ClosedJourney]:
        """Compare *produced* (and the trailing null path) with what was emitted; the
        new and changed journeys (``version + 1``) and the retracted ones out."""
        trailing = self._trailing(state)
        if trailing is not None:
            produced = [*produced, trailing]
        stale = set(gone or ())
        if before is not None:
            stale.add(before)
        out: list[ClosedJourney] = []
        for journey in produced:
            jid = journey.journey_id
            stale.discard(jid)
            digest = journey.digest()
            entry = state.emitted.get(jid)
            if entry is not None and entry[_DIGEST] == digest and not entry[_GONE]:
                continue
            version = 1 if entry is None else int(entry[_V]) + 1
            state.emitted[jid] = [
                version,
                digest,
                int(journey.started_at.timestamp() * 1000),
                int(journey.ended_at.timestamp() * 1000),
                journey.person_id,
                1 if journey.converted else 0,
                0,
            ]
            out.append(replace(journey, version=version))
        for jid in sorted(stale):
            entry = state.emitted.get(jid)
            if entry is None or entry[_GONE]:
                continue
            entry[_V] = int(entry[_V]) + 1
            entry[_GONE] = 1
            out.append(
                ClosedJourney(
                    journey_id=jid,
                    person_id=str(entry[_PERSON]),
                    started_at=from_millis(int(entry[_START])),
                    ended_at=from_millis(int(entry[_END])),
                    converted=bool(entry[_CONV]),
                    conversion_event_id=None,
                    revenue=0.0,
                    touches=(),
                    version=int(entry[_V]),
                    retracted=True,
                )
            )
        return out

    def _idle_deadline(self, touches: list[list[Any]]) -> int:
        rules = self.rules
        return int(touches[-1][_T]) + rules.inactivity_ms + rules.allowed_lateness_ms + 1

    def _trailing_id(self, head: list[Any]) -> str | None:
        touches = head[0]
        return journey_id_for_null(touches[0][_ID]) if touches else None

    def _trailing(self, state: JourneyState) -> ClosedJourney | None:
        """The open journey as a null path, once the watermark is past its expiry."""
        touches = state.head[0]
        if not touches or state.watermark_ms < self._idle_deadline(touches):
            return None
        return _null_journey(state.person_id, touches)

    # -- one event, in time order --------------------------------------------------------

    def _step(
        self, replay: list[Any], event: list[Any], person: str | None = None
    ) -> list[ClosedJourney]:
        """Apply one event to a replay state (in place); the journeys it closes."""
        rules = self.rules
        closed: list[ClosedJourney] = []
        touches: list[list[Any]] = replay[0]
        session = replay[1]
        at, event_id, flags = event[_T], event[_ID], event[_E_FLAGS]
        channel, campaign = event[_E_CH], event[_E_CAMP]
        owner = person or ""
        if touches and at > touches[-1][_T] + rules.inactivity_ms:
            closed.append(_null_journey(owner, touches))
            touches = replay[0] = []
        if flags & SESSION:
            if (
                session is not None
                and at - session[_S_LAST] <= rules.session_timeout_ms
                and not (
                    rules.split_session_on_campaign
                    and channel != "direct"
                    and (channel != session[_S_CH] or campaign != session[_S_CAMP])
                )
            ):
                session[_S_LAST] = max(session[_S_LAST], at)
            else:
                last = touches[-1] if touches else None
                if not (
                    rules.click_opens_session
                    and last is not None
                    and last[_KIND] == KIND_TOUCH
                    and last[_CH] == channel
                    and at - last[_T] <= rules.session_timeout_ms
                ):
                    touch = [at, event_id, channel, campaign, KIND_SESSION,
                             event[_E_SRC], event[_E_DEV]]  # fmt: skip
                    self._push_touch(touches, touch)
                replay[1] = [event_id, at, at, channel, campaign]
        elif flags & TOUCH:
            touch = [at, event_id, channel, campaign, KIND_TOUCH, event[_E_SRC], event[_E_DEV]]
            self._push_touch(touches, touch)
        if flags & CONVERSION:
            if (
                not flags & SESSION
                and rules.conversion_is_touch
                and channel not in (_NO_TOUCH_CHANNELS)
            ):
                last = touches[-1] if touches else None
                if not (
                    last is not None
                    and last[_CH] == channel
                    and at - last[_T] <= rules.session_timeout_ms
                ):
                    touch = [at, event_id, channel, campaign, KIND_CONVERSION,
                             event[_E_SRC], event[_E_DEV]]  # fmt: skip
                    self._push_touch(touches, touch)
            closed.append(self._close_conversion(replay, owner, event))
        return closed

    def _push_touch(self, touches: list[list[Any]], touch: list[Any]) -> None:
        touches.append(touch)
        # Touches older than the lookback can never be credited by a later conversion.
        horizon = touch[_T] - self.rules.lookback_ms
        drop = 0
        while drop < len(touches) - 1 and touches[drop][_T] < horizon:
            drop += 1
        drop = max(drop, len(touches) - self.rules.max_open_touches)
        if drop > 0:
            del touches[:drop]

    def _close_conversion(self, replay: list[Any], person: str, event: list[Any]) -> ClosedJourney:
        at, event_id, source, device = event[_T], event[_ID], event[_E_SRC], event[_E_DEV]
        horizon = at - self.rules.lookback_ms
        credited = tuple(_touch(t) for t in replay[0] if t[_T] >= horizon)
        if not credited:
            session = replay[1]
            fallback = "direct"
            if session is not None and 0 <= at - session[_S_LAST] <= self.rules.session_timeout_ms:
                fallback = str(session[_S_CH])
            synthetic = Touch(
                fallback, from_millis(at), event_id, None, KIND_SYNTHETIC, source, device
            )
            credited = (synthetic,)
        replay[0] = []
        replay[2] = [at, event_id]
        return ClosedJourney(
            journey_id=journey_id_for_conversion(event_id),
            person_id=person,
            started_at=credited[0].at,
            ended_at=from_millis(at),
            converted=True,
            conversion_event_id=event_id,
            revenue=float(event[_E_REV]),
            touches=credited,
            conversion_event_type=str(event[_E_TYPE]),
            conversion_device=str(device),
        )


def _touch(item: list[Any]) -> Touch:
    return Touch(
        channel=item[_CH],
        at=from_millis(item[_T]),
        event_id=item[_ID],
        campaign=item[_CAMP],
        kind=item[_KIND],
        source=item[_SRC],
        device=item[_DEV],
    )


def _null_journey(person: str, touches: Iterable[list[Any]]) -> ClosedJourney:
    path = tuple(_touch(t) for t in touches)
    return ClosedJourney(
        journey_id=journey_id_for_null(path[0].event_id),
        person_id=person,
        started_at=path[0].at,
        ended_at=path[-1].at,
        converted=False,
        conversion_event_id=None,
        revenue=0.0,
        touches=path,
    )
