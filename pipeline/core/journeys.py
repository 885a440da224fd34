"""Per-person customer journeys, built in event time.

A *journey* is the ordered list of a person's touches up to a conversion (a converted
path) or up to its expiry (a null path). Rules (all in :class:`JourneyRules`, see
``docs/journeys.md`` for the worked example):

* **Sessions.** Consecutive web/app events of a person (``page_view``, ``screen_view``,
  ``session_start``, and every Segment event but identify/alias/group) less than 30
  minutes apart form one session, which is *one* touch credited to the channel of its
  first event. An event that arrives with a *new acquisition* (a channel other than
  ``direct``, or another campaign) starts a new session, as Universal Analytics did;
  GA4 would keep the session (``split_session_on_campaign = false`` does that).
* **Touches.** Each email click, SMS click, push open, ad click, store visit, call and
  chat is one touch. Other events (email delivered/opened, SMS delivered...) are not.
* **Conversions** (purchase, order_completed, store_purchase, marketplace_purchase)
  close the journey. The touches inside the lookback window (30 days) are credited,
  older ones are dropped, and a new journey begins. A conversion that does not come
  from a web/app session (a store or marketplace purchase) is itself a touch of its
  channel, unless the previous touch has that channel within the session timeout (the
  store visit that led to it). A conversion left without any touch gets one synthetic
  touch: the channel of the session it happened in, else ``direct``.
* **Expiry.** A journey without conversion closes as a null path once event time
  passes its last touch plus the inactivity window (30 days).
* **Time.** Event time only. The caller passes a watermark (largest ``occurred_at``
  seen in the partition, less the allowed lateness, see :class:`Watermark`). An event
  older than the watermark is *late*: it is returned with a reason, never applied and
  never dropped silently. Events at or after the watermark wait in a small per-person
  buffer sorted by time and are applied once the watermark passes them, so events
  shuffled within the lateness give exactly the same journeys.
* **Merges and re-attribution.** :meth:`JourneyBuilder.merge` joins an absorbed
  person's state into the survivor's, re-running the combined timeline. The last
  ``reattribution_keep`` conversions (within ``reattribution_window``) are kept with
  their touches; a conversion whose credited touches change is emitted again with the
  same ``journey_id`` and ``version + 1``.

Everything here is pure and synchronous. The state is a plain JSON structure
(:meth:`JourneyState.to_dict`) that a Faust/rocksdict table stores per person.
"""

from __future__ import annotations

import bisect
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from pipeline.core.channels import ChannelRulesError, apply_set_override
from pipeline.core.model import Touchpoint, from_millis

#: Namespace of journey ids: ``uuid5(JOURNEY_NAMESPACE, "conversion:<event_id>")`` for a
#: converted journey (stable across identity merges, which change the person) and
#: ``uuid5(JOURNEY_NAMESPACE, "null:<event_id of the first touch>")`` for a null path.
JOURNEY_NAMESPACE = uuid.UUID("0b8f5a4e-7c61-5d0e-9f3a-2e4c6b1d8a70")

STATE_FORMAT = 1

# Kinds of events (bit flags) and of touches.
SESSION = 1
TOUCH = 2
CONVERSION = 4

KIND_SESSION = "session"
KIND_TOUCH = "touch"
KIND_CONVERSION = "conversion"
KIND_SYNTHETIC = "synthetic"

# Layout of the JSON lists kept in the state (compact: the state is stored per person).
# touch:   [at_ms, event_id, channel, campaign, kind]
# pending: [at_ms, event_id, flags, channel, campaign, revenue]
# session: [touch_event_id, start_ms, last_ms, channel, campaign]
_T, _ID, _CH, _CAMP, _KIND = 0, 1, 2, 3, 4
_P_FLAGS, _P_CH, _P_CAMP, _P_REV = 2, 3, 4, 5
_S_ID, _S_START, _S_LAST, _S_CH, _S_CAMP = 0, 1, 2, 3, 4

_RECENT_IDS = 32
_MEMO_SIZE = 4096
_DUPLICATE = "duplicate"
_NO_TOUCH_CHANNELS = frozenset({"", "unassigned"})


class JourneyError(Exception):
    """A programming error: a state or a call the journey builder cannot work with."""


class JourneyConfigError(JourneyError, ValueError):
    """A journey rule from configuration cannot be used (names the key)."""


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, key: str = "duration") -> timedelta:
    """``"30m"``, ``"1h"``, ``"30d"``, ``"2w"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise JourneyConfigError(f"{key}: expected a duration such as '30m' or seconds")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"])
    raise JourneyConfigError(f"{key}: expected a duration such as '30m', '1h', '30d' or seconds")


def _format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _norm_type(value: str) -> str:
    return value.strip().lower().replace(" ", "_").replace("-", "_")


_DURATION_FIELDS = (
    "session_timeout",
    "lookback",
    "inactivity",
    "allowed_lateness",
    "reattribution_window",
)
_SET_FIELDS = (
    "session_event_types",
    "session_sources",
    "non_session_event_types",
    "touch_event_types",
    "conversion_event_types",
)
_BOOL_FIELDS = ("conversion_is_touch", "split_session_on_campaign", "click_opens_session")
_INT_FIELDS = ("reattribution_keep", "max_open_touches")


@dataclass(frozen=True)
class JourneyRules:
    """How events become touches and journeys. Every field is configurable."""

    #: A session ends after this long without an event of the person.
    session_timeout: timedelta = timedelta(minutes=30)
    #: A conversion credits the touches at most this old.
    lookback: timedelta = timedelta(days=30)
    #: A journey without conversion expires (null path) this long after its last touch.
    inactivity: timedelta = timedelta(days=30)
    #: How far behind the partition's largest ``occurred_at`` an event may arrive. It is
    #: also how long (in event time) a journey waits before it is emitted.
    allowed_lateness: timedelta = timedelta(hours=1)
    #: Event types that are web/app session activity, whatever the source.
    session_event_types: frozenset[str] = frozenset(
        {"page_view", "screen_view", "session_start", "page", "screen", "track"}
    )
    #: Sources whose events are all session activity (but ``non_session_event_types``).
    session_sources: frozenset[str] = frozenset({"segment"})
    non_session_event_types: frozenset[str] = frozenset({"identify", "alias", "group"})
    #: Event types that are one touch each.
    touch_event_types: frozenset[str] = frozenset(
        {"email_click", "sms_click", "push_open", "ad_click", "store_visit", "call", "chat"}
    )
    #: Event types that convert (and close the journey).
    conversion_event_types: frozenset[str] = frozenset(
        {"purchase", "order_completed", "store_purchase", "marketplace_purchase"}
    )
    #: A conversion that is not a session event is a touch of its own channel.
    conversion_is_touch: bool = True
    #: A new acquisition (campaign/channel) inside a session starts a new session touch.
    split_session_on_campaign: bool = True
    #: A session that starts within the session timeout after a click (email, SMS, ad...)
    #: of the same channel is the visit that click opened: one touch, not two.
    click_opens_session: bool = True
    #: Converted journeys kept per person for re-attribution after merges.
    reattribution_keep: int = 5
    #: ... and for how long after their conversion (event time).
    reattribution_window: timedelta = timedelta(days=30)
    #: Cap on the touches of one open journey (oldest dropped first).
    max_open_touches: int = 500

    session_timeout_ms: int = field(init=False, repr=False, compare=False)
    lookback_ms: int = field(init=False, repr=False, compare=False)
    inactivity_ms: int = field(init=False, repr=False, compare=False)
    allowed_lateness_ms: int = field(init=False, repr=False, compare=False)
    reattribution_window_ms: int = field(init=False, repr=False, compare=False)
    _memo: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _DURATION_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise JourneyConfigError(f"{name}: must be a non-negative duration")
            object.__setattr__(self, f"{name}_ms", int(value.total_seconds() * 1000))
        if self.session_timeout <= timedelta(0) or self.inactivity <= timedelta(0):
            raise JourneyConfigError("session_timeout and inactivity must be positive")
        for name in _SET_FIELDS:
            object.__setattr__(self, name, frozenset(_norm_type(v) for v in getattr(self, name)))
        if self.reattribution_keep < 0 or self.max_open_touches < 1:
            raise JourneyConfigError("reattribution_keep >= 0 and max_open_touches >= 1")
        object.__setattr__(self, "_memo", {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: JourneyRules | None = None) -> JourneyRules:
        """Rules from a config mapping (e.g. the ``[journeys]`` table of a TOML file).

        Durations are ``"30m"``/``"1h"``/``"30d"`` strings or seconds; event-type sets
        are a list (replaces the default) or ``{add = [...], remove = [...]}``.
        ``inactivity_window`` is accepted for ``inactivity``. Unknown keys are an error.
        """
        base = base if base is not None else cls()
        known = {f.name for f in fields(cls) if f.init}
        changes: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = "inactivity" if raw_key == "inactivity_window" else raw_key
            if key not in known:
                raise JourneyConfigError(f"{raw_key}: unknown journey rule")
            if key in _DURATION_FIELDS:
                changes[key] = parse_duration(value, key)
            elif key in _SET_FIELDS:
                try:
                    changes[key] = apply_set_override(getattr(base, key), value, key)
                except ChannelRulesError as exc:
                    raise JourneyConfigError(str(exc)) from exc
            elif key in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise JourneyConfigError(f"{key}: expected true or false")
                changes[key] = value
            elif key in _INT_FIELDS:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise JourneyConfigError(f"{key}: expected an integer")
                changes[key] = value
        return replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The rules as plain data, readable back with :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for name in _DURATION_FIELDS:
            out[name] = _format_duration(getattr(self, name))
        for name in _SET_FIELDS:
            out[name] = sorted(getattr(self, name))
        for name in (*_BOOL_FIELDS, *_INT_FIELDS):
            out[name] = getattr(self, name)
        return out

    def classify(self, source: str, event_type: str) -> int:
        """Bit flags of an event: :data:`SESSION`, :data:`TOUCH`, :data:`CONVERSION` (0: none)."""
        memo = self._memo
        key = (source, event_type)
        flags = memo.get(key)
        if flags is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            flags = memo[key] = self._classify(source, event_type)
        return flags

    def _classify(self, source: str, event_type: str) -> int:
        etype = _norm_type(event_type)
        flags = CONVERSION if etype in self.conversion_event_types else 0
        if etype in self.touch_event_types:
            flags |= TOUCH
        elif etype in self.session_event_types or (
            source.strip().lower() in self.session_sources
            and etype not in self.non_session_event_types
        ):
            flags |= SESSION
        return flags


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touch:
    """One touch of a path. ``kind`` is session, touch, conversion or synthetic."""

    channel: str
    at: datetime
    event_id: str
    campaign: str | None = None
    kind: str = KIND_TOUCH


@dataclass(frozen=True, slots=True)
class ClosedJourney:
    """A finished journey: converted (with its credited touches) or a null path.

    ``version`` grows when the journey is rebuilt (identity merge); the latest version
    of a ``journey_id`` replaces the earlier ones.
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
        }


def journey_id_for_conversion(conversion_event_id: str) -> str:
    return str(uuid.uuid5(JOURNEY_NAMESPACE, f"conversion:{conversion_event_id}"))


def journey_id_for_null(first_touch_event_id: str) -> str:
    return str(uuid.uuid5(JOURNEY_NAMESPACE, f"null:{first_touch_event_id}"))


class JourneyState:
    """The journey state of one person, as plain JSON-ready lists and dicts.

    The builder updates a state *in place* and returns it (no copies on the hot path):
    treat a state passed to :class:`JourneyBuilder` as consumed, and call :meth:`copy`
    first to keep a snapshot. :meth:`to_dict` returns the live structure, not a copy.
    """

    __slots__ = (
        "closed",
        "journey_key",
        "last_conversion",
        "pending",
        "person_id",
        "recent",
        "session",
        "touches",
        "watermark_ms",
    )

    def __init__(self, person_id: str, watermark_ms: int = 0) -> None:
        if not person_id:
            raise JourneyError("a journey state needs a person_id")
        self.person_id = person_id
        #: The largest watermark applied; events older than it are late.
        self.watermark_ms = watermark_ms
        #: Events at or after the watermark, sorted by (time, event id).
        self.pending: list[list[Any]] = []
        #: Touches of the open journey, in time order.
        self.touches: list[list[Any]] = []
        #: Event id of the open journey's first touch (names its null path).
        self.journey_key: str | None = None
        #: The current web/app session.
        self.session: list[Any] | None = None
        #: ``[time, event id]`` of the last conversion: the open journey starts after it.
        self.last_conversion: list[Any] | None = None
        #: The last converted journeys, kept for re-attribution.
        self.closed: list[dict[str, Any]] = []
        #: Ids of the last applied events, to ignore redeliveries.
        self.recent: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "person_id": self.person_id,
            "watermark_ms": self.watermark_ms,
            "pending": self.pending,
            "touches": self.touches,
            "journey_key": self.journey_key,
            "session": self.session,
            "last_conversion": self.last_conversion,
            "closed": self.closed,
            "recent": self.recent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyState:
        try:
            if data.get("format") != STATE_FORMAT:
                raise JourneyError(f"journey state format {data.get('format')!r} is not 1")
            state = cls(str(data["person_id"]), int(data["watermark_ms"]))
            state.pending = list(data["pending"])
            state.touches = list(data["touches"])
            state.journey_key = data.get("journey_key")
            state.session = data.get("session")
            state.last_conversion = data.get("last_conversion")
            state.closed = list(data.get("closed", []))
            state.recent = list(data.get("recent", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise JourneyError(f"malformed journey state: {exc}") from exc
        return state

    def copy(self) -> JourneyState:
        """A deep copy (JSON structures only, so this is cheap and exact)."""
        return JourneyState.from_dict(_deep_copy(self.to_dict()))

    def is_empty(self) -> bool:
        """Nothing pending, no open journey and no kept conversion: the key can go."""
        return not (self.pending or self.touches or self.closed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JourneyState) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"JourneyState(person_id={self.person_id!r}, pending={len(self.pending)}, "
            f"touches={len(self.touches)}, closed={len(self.closed)})"
        )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one event did: the updated state, the journeys it closed, and the events
    that were refused (``late``: ``(touchpoint, reason)``, to dead-letter) or were
    redeliveries of events already applied (``duplicates``, a no-op)."""

    state: JourneyState
    closed: list[ClosedJourney]
    late: list[tuple[Touchpoint, str]]
    duplicates: list[Touchpoint] = field(default_factory=list)


@dataclass
class Watermark:
    """The watermark of one partition: the largest ``occurred_at`` seen, less the lateness.

    Plain data (``to_dict``/``from_dict``) so an agent can checkpoint one per partition.
    """

    lateness_ms: int
    max_seen_ms: int | None = None

    def observe(self, occurred_at_ms: int) -> int:
        """Take an event's time into account and return the watermark."""
        if self.max_seen_ms is None or occurred_at_ms > self.max_seen_ms:
            self.max_seen_ms = occurred_at_ms
        return self.value

    @property
    def value(self) -> int:
        if self.max_seen_ms is None:
            return 0
        return self.max_seen_ms - self.lateness_ms

    def to_dict(self) -> dict[str, Any]:
        return {"lateness_ms": self.lateness_ms, "max_seen_ms": self.max_seen_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Watermark:
        return cls(int(data["lateness_ms"]), data.get("max_seen_ms"))


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------


def _key(item: list[Any]) -> tuple[int, str]:
    return item[_T], item[_ID]


def _session_last(session: list[Any]) -> int:
    return int(session[_S_LAST])


class JourneyBuilder:
    """Applies touchpoints to per-person journey states, in event time."""

    def __init__(self, rules: JourneyRules | None = None) -> None:
        self.rules = rules if rules is not None else JourneyRules()

    # -- public API --------------------------------------------------------------------

    def apply(self, state: JourneyState | None, tp: Touchpoint, watermark_ms: int) -> StepResult:
        """Apply one touchpoint of the state's person.

        *watermark_ms* is the partition's current watermark (see :class:`Watermark`,
        observe the event first). The event is buffered, then every buffered event older
        than the watermark is applied in time order, which may close journeys. Events
        that neither touch nor convert are ignored whatever their time.
        """
        if state is None:
            if not tp.person_id:
                raise JourneyError(f"touchpoint {tp.event_id} has no person_id")
            state = JourneyState(tp.person_id)
        watermark = max(watermark_ms, state.watermark_ms)
        state.watermark_ms = watermark
        late: list[tuple[Touchpoint, str]] = []
        duplicates: list[Touchpoint] = []
        flags = self.rules.classify(tp.source, tp.event_type)
        if flags:
            refusal = self._accept(state, tp, flags, watermark)
            if refusal == _DUPLICATE:
                duplicates.append(tp)
            elif refusal is not None:
                late.append((tp, refusal))
        closed: list[ClosedJourney] = []
        self._advance(state, watermark, closed)
        return StepResult(state, closed, late, duplicates)

    def expire(
        self, state: JourneyState, watermark_ms: int
    ) -> tuple[JourneyState, list[ClosedJourney]]:
        """Move a state to *watermark_ms* with no new event.

        Buffered events older than the watermark are applied, an open journey whose last
        touch is more than the inactivity window behind the watermark closes as a null
        path, and kept conversions past the re-attribution window are forgotten. Call it
        when :func:`next_deadline_ms` is reached, and at the end of a replay.
        """
        watermark = max(watermark_ms, state.watermark_ms)
        state.watermark_ms = watermark
        closed: list[ClosedJourney] = []
        self._advance(state, watermark, closed)
        return state, closed

    def next_deadline_ms(self, state: JourneyState) -> int | None:
        """The smallest watermark at which :meth:`expire` would change *state*, if any.

        An agent keeps these in a timer so idle persons' buffered conversions and
        expiring journeys are handled without scanning the whole table.
        """
        deadlines: list[int] = []
        if state.pending:
            deadlines.append(state.pending[0][_T] + 1)
        if state.touches:
            deadlines.append(state.touches[-1][_T] + self.rules.inactivity_ms + 1)
        if state.closed:
            oldest = min(rec["conversion"][_T] for rec in state.closed)
            deadlines.append(oldest + self.rules.reattribution_window_ms + 1)
        return min(deadlines) if deadlines else None

    def merge(
        self,
        survivor: JourneyState,
        absorbed: JourneyState,
        watermark_ms: int | None = None,
    ) -> tuple[JourneyState, list[ClosedJourney]]:
        """Join the absorbed person's journey state into the survivor's.

        Both timelines (open touches, kept conversions with their touches, and buffered
        events older than the merged watermark) are replayed together in time order.
        Returns the merged state (owned by the survivor) and every kept conversion whose
        credited touches or person changed, rebuilt with the same ``journey_id`` and
        ``version + 1``, plus any journey that the merged timeline closes.
        """
        person = survivor.person_id
        watermark = max(survivor.watermark_ms, absorbed.watermark_ms, watermark_ms or 0)
        merged = JourneyState(person, watermark)
        closed: list[ClosedJourney] = []

        # 1. The combined timeline. Rank orders items of one instant like live processing.
        items: list[tuple[int, str, int, str, Any]] = []
        seen_touch: set[str] = set()
        records: dict[str, dict[str, Any]] = {}
        sessions: dict[str, list[Any]] = {}
        for st in (survivor, absorbed):
            if st.session is not None:
                sessions[st.session[_S_ID]] = list(st.session)
            for rec in st.closed:
                conv_id = rec["conversion"][_ID]
                other = records.get(conv_id)
                if other is None or rec["version"] > other["version"]:
                    records[conv_id] = rec
            for rec in st.closed:
                for touch in rec["touches"]:
                    if touch[_ID] not in seen_touch:
                        seen_touch.add(touch[_ID])
                        items.append((touch[_T], touch[_ID], 0, "touch", touch))
            for touch in st.touches:
                if touch[_ID] not in seen_touch:
                    seen_touch.add(touch[_ID])
                    items.append((touch[_T], touch[_ID], 0, "touch", touch))
        for rec in records.values():
            conv = rec["conversion"]
            items.append((conv[_T], conv[_ID], 1, "conversion", rec))
        pending_ids: set[str] = set()
        for st in (survivor, absorbed):
            for event in st.pending:
                if event[_ID] in pending_ids or event[_ID] in seen_touch or event[_ID] in records:
                    continue
                pending_ids.add(event[_ID])
                if event[_T] < watermark:
                    items.append((event[_T], event[_ID], 0, "event", event))
                else:
                    merged.pending.append(list(event))
        merged.pending.sort(key=_key)
        items.sort(key=lambda item: (item[0], item[1], item[2]))

        # 2. Replay it.
        for at, event_id, _rank, what, payload in items:
            if what == "touch":
                touch = list(payload)
                self._expire_before(merged, at, closed)
                self._push_touch(merged, touch)
                if touch[_KIND] == KIND_SESSION:
                    merged.session = sessions.get(event_id) or [
                        event_id,
                        at,
                        at,
                        touch[_CH],
                        touch[_CAMP],
                    ]
            elif what == "event":
                self._finalize(merged, payload, closed)
            else:
                self._expire_before(merged, at, closed)
                journey = self._reclose(merged, payload)
                if journey is not None:
                    closed.append(journey)

        # 3. The session that lasted longest, the union of recent ids, then expiry.
        candidates: list[list[Any]] = [
            s for s in (merged.session, survivor.session, absorbed.session) if s is not None
        ]
        if candidates:
            best: list[Any] = max(candidates, key=_session_last)
            merged.session = list(best)
        else:
            merged.session = None
        # Both persons' recent ids stay known (up to twice the usual window), so that a
        # redelivery of either's recent events is still recognised after the merge.
        merged.recent = list(dict.fromkeys(survivor.recent + absorbed.recent))[-2 * _RECENT_IDS :]
        self._advance(merged, watermark, closed)
        return merged, closed

    # -- applying one event ------------------------------------------------------------

    def _accept(
        self, state: JourneyState, tp: Touchpoint, flags: int, watermark: int
    ) -> str | None:
        """Buffer the event; None when accepted, else :data:`_DUPLICATE` or the reason."""
        occurred = tp.occurred_at
        if occurred.tzinfo is None or occurred.utcoffset() is None:
            return f"invalid_time: naive datetime {occurred.isoformat()}: a timezone is required"
        at = int(occurred.timestamp() * 1000)  # == model.to_millis, without the conversion
        event_id = tp.event_id
        if self._is_known(state, event_id):
            return _DUPLICATE
        if at < watermark:
            behind = timedelta(milliseconds=watermark - at)
            return (
                f"late_event: occurred_at {from_millis(at).isoformat()} is {behind} "
                f"before the watermark {from_millis(watermark).isoformat()} "
                f"(allowed lateness {self.rules.allowed_lateness})"
            )
        campaign = tp.campaign.name if tp.campaign is not None else None
        revenue = float(tp.revenue) if tp.revenue is not None else 0.0
        entry = [at, event_id, flags, tp.channel, campaign, revenue]
        bisect.insort(state.pending, entry, key=_key)
        return None

    @staticmethod
    def _is_known(state: JourneyState, event_id: str) -> bool:
        """A redelivery of one of the last applied or of a buffered event."""
        return event_id in state.recent or any(p[_ID] == event_id for p in state.pending)

    def _advance(self, state: JourneyState, watermark: int, closed: list[ClosedJourney]) -> None:
        pending = state.pending
        done = 0
        while done < len(pending) and pending[done][_T] < watermark:
            self._finalize(state, pending[done], closed)
            done += 1
        if done:
            del pending[:done]
        # Expiry: every event before the watermark has been applied, so an open journey
        # idle for longer than the inactivity window can no longer continue.
        if state.touches and state.touches[-1][_T] + self.rules.inactivity_ms < watermark:
            closed.append(self._close_null(state))
        if state.closed:
            horizon = watermark - self.rules.reattribution_window_ms
            if state.closed[0]["conversion"][_T] < horizon:  # kept in time order
                state.closed = [rec for rec in state.closed if rec["conversion"][_T] >= horizon]

    def _finalize(self, state: JourneyState, event: list[Any], closed: list[ClosedJourney]) -> None:
        """Apply one event, in time order, to the open journey."""
        rules = self.rules
        at, event_id, flags = event[_T], event[_ID], event[_P_FLAGS]
        channel, campaign = event[_P_CH], event[_P_CAMP]
        self._expire_before(state, at, closed)
        if flags & SESSION:
            session = state.session
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
                last = state.touches[-1] if state.touches else None
                if not (
                    rules.click_opens_session
                    and last is not None
                    and last[_KIND] == KIND_TOUCH
                    and last[_CH] == channel
                    and at - last[_T] <= rules.session_timeout_ms
                ):
                    self._push_touch(state, [at, event_id, channel, campaign, KIND_SESSION])
                state.session = [event_id, at, at, channel, campaign]
        elif flags & TOUCH:
            self._push_touch(state, [at, event_id, channel, campaign, KIND_TOUCH])
        if flags & CONVERSION:
            if (
                not flags & SESSION
                and rules.conversion_is_touch
                and channel not in (_NO_TOUCH_CHANNELS)
            ):
                last = state.touches[-1] if state.touches else None
                if not (
                    last is not None
                    and last[_CH] == channel
                    and at - last[_T] <= rules.session_timeout_ms
                ):
                    self._push_touch(state, [at, event_id, channel, campaign, KIND_CONVERSION])
            closed.append(self._close_conversion(state, at, event_id, event[_P_REV]))
        recent = state.recent
        recent.append(event_id)
        if len(recent) > 2 * _RECENT_IDS:
            del recent[: len(recent) - _RECENT_IDS]

    def _push_touch(self, state: JourneyState, touch: list[Any]) -> None:
        touches = state.touches
        if not touches:
            state.journey_key = touch[_ID]
        touches.append(touch)
        # Touches older than the lookback can never be credited by a later conversion.
        horizon = touch[_T] - self.rules.lookback_ms
        drop = 0
        while drop < len(touches) - 1 and touches[drop][_T] < horizon:
            drop += 1
        drop = max(drop, len(touches) - self.rules.max_open_touches)
        if drop > 0:
            del touches[:drop]

    def _expire_before(self, state: JourneyState, at: int, closed: list[ClosedJourney]) -> None:
        if state.touches and at > state.touches[-1][_T] + self.rules.inactivity_ms:
            closed.append(self._close_null(state))

    # -- closing -----------------------------------------------------------------------

    def _fallback_channel(self, state: JourneyState, at: int) -> str:
        session = state.session
        if session is not None and 0 <= at - session[_S_LAST] <= self.rules.session_timeout_ms:
            return str(session[_S_CH])
        return "direct"

    def _close_conversion(
        self, state: JourneyState, at: int, event_id: str, revenue: float
    ) -> ClosedJourney:
        horizon = at - self.rules.lookback_ms
        record: dict[str, Any] = {
            "conversion": [at, event_id],
            "after": state.last_conversion,
            "revenue": revenue,
            "touches": [t for t in state.touches if t[_T] >= horizon],
            "fallback": self._fallback_channel(state, at),
            "version": 1,
            "person_id": state.person_id,
        }
        keep = self.rules.reattribution_keep
        if keep:
            state.closed.append(record)
            if len(state.closed) > keep:
                del state.closed[: len(state.closed) - keep]
        state.touches = []
        state.journey_key = None
        state.last_conversion = [at, event_id]
        return _journey_from_record(record)

    def _reclose(self, state: JourneyState, record: dict[str, Any]) -> ClosedJourney | None:
        """Close a kept conversion again on the merged timeline; the journey if it changed."""
        at, event_id = record["conversion"]
        bounds = [b for b in (record["after"], state.last_conversion) if b is not None]
        after = max((tuple(b) for b in bounds), default=None)
        horizon = at - self.rules.lookback_ms
        touches = [
            t
            for t in state.touches
            if t[_T] >= horizon and (after is None or (t[_T], t[_ID]) > after)
        ]
        changed = touches != record["touches"] or record["person_id"] != state.person_id
        new = dict(record)
        new["touches"] = touches
        new["person_id"] = state.person_id
        new["after"] = list(after) if after is not None else None
        if changed:
            new["version"] = record["version"] + 1
        state.closed.append(new)
        keep = self.rules.reattribution_keep
        if len(state.closed) > keep:
            del state.closed[: len(state.closed) - keep]
        state.touches = []
        state.journey_key = None
        state.last_conversion = [at, event_id]
        return _journey_from_record(new) if changed else None

    def _close_null(self, state: JourneyState) -> ClosedJourney:
        touches = tuple(_touch(t) for t in state.touches)
        key = state.journey_key or state.touches[0][_ID]
        journey = ClosedJourney(
            journey_id=journey_id_for_null(key),
            person_id=state.person_id,
            started_at=touches[0].at,
            ended_at=touches[-1].at,
            converted=False,
            conversion_event_id=None,
            revenue=0.0,
            touches=touches,
        )
        state.touches = []
        state.journey_key = None
        return journey


def _touch(item: list[Any]) -> Touch:
    return Touch(
        channel=item[_CH],
        at=from_millis(item[_T]),
        event_id=item[_ID],
        campaign=item[_CAMP],
        kind=item[_KIND],
    )


def _journey_from_record(record: Mapping[str, Any]) -> ClosedJourney:
    at, event_id = record["conversion"]
    touches = tuple(_touch(t) for t in record["touches"])
    if not touches:
        touches = (Touch(record["fallback"], from_millis(at), event_id, None, KIND_SYNTHETIC),)
    return ClosedJourney(
        journey_id=journey_id_for_conversion(event_id),
        person_id=record["person_id"],
        started_at=touches[0].at,
        ended_at=from_millis(at),
        converted=True,
        conversion_event_id=event_id,
        revenue=float(record["revenue"]),
        touches=touches,
        version=int(record["version"]),
    )
