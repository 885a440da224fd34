"""Journey rules: which events are sessions, touches and conversions, and the windows.

Every field of :class:`JourneyRules` is configurable from the ``[journeys]`` table of the
rules file (``docs/journeys.md`` lists them with their defaults). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

from pipeline.core.channels import ChannelRulesError, apply_set_override

# Kinds of events (bit flags).
SESSION = 1
TOUCH = 2
CONVERSION = 4

_MEMO_SIZE = 4096


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
    "max_lateness",
)
_SET_FIELDS = (
    "session_event_types",
    "session_sources",
    "non_session_event_types",
    "touch_event_types",
    "conversion_event_types",
)
_BOOL_FIELDS = ("conversion_is_touch", "split_session_on_campaign", "click_opens_session")
_INT_FIELDS = ("max_open_touches", "max_events")


@dataclass(frozen=True)
class JourneyRules:
    """How events become touches and journeys. Every field is configurable."""

    #: A session ends after this long without an event of the person.
    session_timeout: timedelta = timedelta(minutes=30)
    #: A conversion credits the touches at most this old.
    lookback: timedelta = timedelta(days=30)
    #: A journey without conversion expires (null path) this long after its last touch.
    inactivity: timedelta = timedelta(days=30)
    #: How long (in event time) after its expiry a null path waits before it is emitted.
    #: Late events still change it afterwards (a new version); this only saves revisions.
    allowed_lateness: timedelta = timedelta(hours=1)
    #: How far behind the person's newest event a late event is still placed in its
    #: journey. Older events go to dead letters. ``None``: the lookback window.
    max_lateness: timedelta | None = None
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
    #: Cap on the touches of one open journey (oldest dropped first).
    max_open_touches: int = 500
    #: Cap on the events kept per person for late arrivals (oldest become final first).
    max_events: int = 1000

    session_timeout_ms: int = field(init=False, repr=False, compare=False)
    lookback_ms: int = field(init=False, repr=False, compare=False)
    inactivity_ms: int = field(init=False, repr=False, compare=False)
    allowed_lateness_ms: int = field(init=False, repr=False, compare=False)
    max_lateness_ms: int = field(init=False, repr=False, compare=False)
    #: Events older than the person's newest less this are final (see ``docs/journeys.md``).
    horizon_ms: int = field(init=False, repr=False, compare=False)
    _memo: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_lateness is None:
            object.__setattr__(self, "max_lateness", self.lookback)
        for name in _DURATION_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise JourneyConfigError(f"{name}: must be a non-negative duration")
            object.__setattr__(self, f"{name}_ms", int(value.total_seconds() * 1000))
        if self.session_timeout <= timedelta(0) or self.inactivity <= timedelta(0):
            raise JourneyConfigError("session_timeout and inactivity must be positive")
        for name in _SET_FIELDS:
            object.__setattr__(self, name, frozenset(_norm_type(v) for v in getattr(self, name)))
        if self.max_open_touches < 1 or self.max_events < 16:
            raise JourneyConfigError("max_open_touches >= 1 and max_events >= 16")
        horizon = self.max_lateness_ms + self.lookback_ms + self.session_timeout_ms + 86_400_000
        object.__setattr__(self, "horizon_ms", horizon)
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
