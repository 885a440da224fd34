"""Segment rules: lifecycle stages and behavioural segments over a :class:`Profile`.

Declared in the ``[segments]`` table of the rules file (``docs/segments.md``)::

    [segments]
    allowed_lateness = "1h"
    lifecycle = { repeat_orders = 2, loyal_orders = 4, at_risk_after = "60d",
                  lapsed_after = "180d" }

    [segments.abandoned_cart]
    cart_open_for = "24h"

    [segments.big_spenders]
    where = { revenue = { min = 500 }, orders = { min = 3 } }
    recent = [{ signals = ["order"], within = "90d", min = 1 }]

A segment matches when all of its tests hold: ``lifecycle`` (a list of stages),
``where`` (profile fields: a number, ``{min, max}``, or true/false), ``recent`` (counts of
signal kinds within a window) and ``cart_open_for`` (an open cart, on any device, whose
oldest add is at least that old with no order since). ``enabled = false`` drops a
default segment. Pure: no I/O; errors name the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.journey_rules import JourneyConfigError, parse_duration
from pipeline.core.profiles import BOOL_FIELDS, DAY_MS, FIELDS, SIGNAL_KINDS, Profile

LIFECYCLE_STAGES: tuple[str, ...] = (
    "prospect",
    "first_time_buyer",
    "repeat",
    "loyal",
    "at_risk",
    "lapsed",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SEGMENT_KEYS = frozenset({"lifecycle", "where", "recent", "cart_open_for", "enabled"})


class SegmentConfigError(ValueError):
    """A ``[segments]`` rule cannot be used; the message names the key."""


def _ms(value: Any, key: str) -> int:
    try:
        duration = parse_duration(value, key)
    except JourneyConfigError as exc:
        raise SegmentConfigError(str(exc)) from exc
    if duration.total_seconds() < 0:
        raise SegmentConfigError(f"{key}: must not be negative")
    return int(duration.total_seconds() * 1000)


def _int(value: Any, key: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SegmentConfigError(f"{key}: expected an integer >= {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Thresholds of the lifecycle stages (orders and days since the last order)."""

    repeat_orders: int = 2
    loyal_orders: int = 4
    at_risk_after_ms: int = 60 * DAY_MS
    lapsed_after_ms: int = 180 * DAY_MS

    @classmethod
    def from_dict(cls, data: Any, key: str = "segments.lifecycle") -> Lifecycle:
        if not isinstance(data, Mapping):
            raise SegmentConfigError(f"{key}: expected a table")
        base = cls()
        values = {
            "repeat_orders": base.repeat_orders,
            "loyal_orders": base.loyal_orders,
            "at_risk_after_ms": base.at_risk_after_ms,
            "lapsed_after_ms": base.lapsed_after_ms,
        }
        for name, value in data.items():
            if name in ("repeat_orders", "loyal_orders"):
                values[name] = _int(value, f"{key}.{name}", 1)
            elif name in ("at_risk_after", "lapsed_after"):
                values[f"{name}_ms"] = _ms(value, f"{key}.{name}")
            else:
                raise SegmentConfigError(
                    f"{key}.{name}: unknown key; expected repeat_orders, loyal_orders, "
                    "at_risk_after, lapsed_after"
                )
        made = cls(**values)
        if made.loyal_orders < made.repeat_orders:
            raise SegmentConfigError(f"{key}.loyal_orders: must be >= repeat_orders")
        if made.lapsed_after_ms <= made.at_risk_after_ms:
            raise SegmentConfigError(f"{key}.lapsed_after: must be longer than at_risk_after")
        return made

    def stage(self, p: Profile, now_ms: int) -> str:
        if not p.orders:
            return "prospect"
        idle = now_ms - p.last_order_ms
        if idle >= self.lapsed_after_ms:
            return "lapsed"
        if idle >= self.at_risk_after_ms:
            return "at_risk"
        if p.orders >= self.loyal_orders:
            return "loyal"
        if p.orders >= self.repeat_orders:
            return "repeat"
        return "first_time_buyer"

    def deadline(self, p: Profile, after_ms: int) -> int | None:
        if not p.orders:
            return None
        for due in (
            p.last_order_ms + self.at_risk_after_ms,
            p.last_order_ms + self.lapsed_after_ms,
        ):
            if due > after_ms:
                return due
        return None


@dataclass(frozen=True, slots=True)
class Recent:
    """``min``..``max`` signals of *kinds* within the last *within_ms*."""

    kinds: frozenset[str]
    within_ms: int
    min: int = 1
    max: int | None = None

    def count(self, p: Profile, now_ms: int) -> int:
        start = now_ms - self.within_ms
        return sum(1 for at, kind in p.recent if kind in self.kinds and start < at <= now_ms)

    def holds(self, p: Profile, now_ms: int) -> bool:
        n = self.count(p, now_ms)
        return n >= self.min and (self.max is None or n <= self.max)

    def deadline(self, p: Profile, after_ms: int) -> int | None:
        """When the next counted signal leaves the window."""
        dues = [at + self.within_ms for at, kind in p.recent if kind in self.kinds]
        later = [d for d in dues if d > after_ms]
        return min(later) if later else None


@dataclass(frozen=True, slots=True)
class SegmentRule:
    name: str
    lifecycle: frozenset[str] = frozenset()
    where: tuple[tuple[str, float | None, float | None, bool | None], ...] = ()
    recent: tuple[Recent, ...] = ()
    cart_open_for_ms: int | None = None

    def matches(self, p: Profile, now_ms: int, stage: str) -> bool:
        if not p.signals:
            return False
        if self.lifecycle and stage not in self.lifecycle:
            return False
        for name, low, high, flag in self.where:
            value = p.value_of(name, now_ms)
            if flag is not None:
                if bool(value) is not flag:
                    return False
                continue
            if low is not None and float(value) < low:
                return False
            if high is not None and float(value) > high:
                return False
        if self.cart_open_for_ms is not None:
            since = p.cart_since_ms
            if not since or now_ms - since < self.cart_open_for_ms:
                return False
        return all(r.holds(p, now_ms) for r in self.recent)

    def deadline(self, p: Profile, after_ms: int) -> int | None:
        """The next event time after *after_ms* at which time alone may change a match."""
        dues: list[int] = []
        if self.cart_open_for_ms is not None and p.cart_since_ms:
            dues.append(p.cart_since_ms + self.cart_open_for_ms)
        for r in self.recent:
            due = r.deadline(p, after_ms)
            if due is not None:
                dues.append(due)
        later = [d for d in dues if d > after_ms]
        return min(later) if later else None

    @classmethod
    def from_dict(cls, name: str, data: Any) -> SegmentRule:
        key = f"segments.{name}"
        if not _NAME.match(name):
            raise SegmentConfigError(f"{key}: a segment name is lower case letters, digits, _")
        if not isinstance(data, Mapping):
            raise SegmentConfigError(f"{key}: expected a table")
        unknown = sorted(set(data) - _SEGMENT_KEYS)
        if unknown:
            raise SegmentConfigError(
                f"{key}.{unknown[0]}: unknown key; expected {', '.join(sorted(_SEGMENT_KEYS))}"
            )
        stages = data.get("lifecycle", [])
        if isinstance(stages, str):
            stages = [stages]
        if not isinstance(stages, list) or any(s not in LIFECYCLE_STAGES for s in stages):
            raise SegmentConfigError(
                f"{key}.lifecycle: expected a list of {', '.join(LIFECYCLE_STAGES)}"
            )
        where = []
        raw_where = data.get("where", {})
        if not isinstance(raw_where, Mapping):
            raise SegmentConfigError(f"{key}.where: expected a table of profile fields")
        for fname, test in raw_where.items():
            fkey = f"{key}.where.{fname}"
            if fname not in FIELDS:
                raise SegmentConfigError(
                    f"{fkey}: unknown profile field; expected one of {', '.join(sorted(FIELDS))}"
                )
            where.append(_condition(fname, test, fkey))
        recent = data.get("recent", [])
        if isinstance(recent, Mapping):
            recent = [recent]
        if not isinstance(recent, list):
            raise SegmentConfigError(f"{key}.recent: expected a list of tables")
        windows = tuple(_recent(r, f"{key}.recent[{i}]") for i, r in enumerate(recent))
        cart = data.get("cart_open_for")
        return cls(
            name=name,
            lifecycle=frozenset(stages),
            where=tuple(where),
            recent=windows,
            cart_open_for_ms=None if cart is None else _ms(cart, f"{key}.cart_open_for"),
        )


def _condition(
    name: str, test: Any, key: str
) -> tuple[str, float | None, float | None, bool | None]:
    if name in BOOL_FIELDS:
        if not isinstance(test, bool):
            raise SegmentConfigError(f"{key}: expected true or false")
        return (name, None, None, test)
    if isinstance(test, bool):
        raise SegmentConfigError(f"{key}: expected a number or {{ min = .., max = .. }}")
    if isinstance(test, int | float):
        return (name, float(test), float(test), None)
    if isinstance(test, Mapping) and test and set(test) <= {"min", "max"}:
        bounds: list[float | None] = []
        for bound in ("min", "max"):
            value = test.get(bound)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise SegmentConfigError(f"{key}.{bound}: expected a number")
            bounds.append(None if value is None else float(value))
        return (name, bounds[0], bounds[1], None)
    raise SegmentConfigError(f"{key}: expected a number or {{ min = .., max = .. }}")


def _recent(data: Any, key: str) -> Recent:
    if not isinstance(data, Mapping):
        raise SegmentConfigError(f"{key}: expected a table with signals and within")
    unknown = sorted(set(data) - {"signals", "within", "min", "max"})
    if unknown:
        raise SegmentConfigError(
            f"{key}.{unknown[0]}: unknown key; expected signals, within, min, max"
        )
    kinds = data.get("signals")
    if not isinstance(kinds, list) or not kinds or any(k not in SIGNAL_KINDS for k in kinds):
        raise SegmentConfigError(f"{key}.signals: expected a list of {', '.join(SIGNAL_KINDS)}")
    if "within" not in data:
        raise SegmentConfigError(f"{key}.within: required (a duration such as '30d')")
    high = data.get("max")
    return Recent(
        kinds=frozenset(kinds),
        within_ms=_ms(data["within"], f"{key}.within"),
        min=_int(data.get("min", 1), f"{key}.min"),
        max=None if high is None else _int(high, f"{key}.max"),
    )


def default_segments() -> dict[str, SegmentRule]:
    """The default segments: the six lifecycle stages and four behavioural ones."""
    rules = {stage: SegmentRule(stage, lifecycle=frozenset({stage})) for stage in LIFECYCLE_STAGES}
    rules["abandoned_cart"] = SegmentRule("abandoned_cart", cart_open_for_ms=DAY_MS)
    rules["app_users_never_bought"] = SegmentRule(
        "app_users_never_bought",
        where=(("app_user", None, None, True), ("orders", None, 0.0, None)),
    )
    rules["email_engaged_not_converted"] = SegmentRule(
        "email_engaged_not_converted",
        recent=(
            Recent(frozenset({"email_open", "email_click"}), 30 * DAY_MS, 1),
            Recent(frozenset({"order"}), 30 * DAY_MS, 0, 0),
        ),
    )
    rules["bopis_customers"] = SegmentRule(
        "bopis_customers", where=(("bopis_orders", 1.0, None, None),)
    )
    return rules


@dataclass(frozen=True)
class SegmentRules:
    """All segments, the lifecycle thresholds and the stream's allowed lateness."""

    segments: dict[str, SegmentRule] = field(default_factory=default_segments)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    #: Membership is computed as of the newest signal time less this: a late signal
    #: within it changes no membership that was already announced.
    allowed_lateness_ms: int = 3_600_000
    #: Cap on the signals kept per person (pending, deduplication, recent windows).
    max_signals: int = 500
    #: Event ids of folded signals remembered per person, to drop redeliveries (a
    #: redelivery after a restart is of recent offsets).
    dedup_ids: int = 128
    #: How long recent signals are kept for windows (at least the longest window).
    history_ms: int = 400 * DAY_MS
    _timed: tuple[SegmentRule, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        timed = tuple(
            r for r in self.segments.values() if r.recent or r.cart_open_for_ms is not None
        )
        object.__setattr__(self, "_timed", timed)
        longest = max(
            (r.within_ms for rule in self.segments.values() for r in rule.recent), default=0
        )
        if longest > self.history_ms:
            object.__setattr__(self, "history_ms", longest)

    @classmethod
    def from_dict(cls, data: Any) -> SegmentRules:
        """Rules from the ``[segments]`` table; errors name the key."""
        if not isinstance(data, Mapping):
            raise SegmentConfigError("segments: expected a table")
        segments = default_segments()
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "lifecycle":
                kwargs["lifecycle"] = Lifecycle.from_dict(value)
            elif name == "allowed_lateness":
                kwargs["allowed_lateness_ms"] = _ms(value, "segments.allowed_lateness")
            elif name == "history":
                kwargs["history_ms"] = _ms(value, "segments.history")
            elif name == "dedup_ids":
                kwargs["dedup_ids"] = _int(value, "segments.dedup_ids", 1)
            elif name == "max_signals":
                kwargs["max_signals"] = _int(value, "segments.max_signals", 16)
            elif isinstance(value, Mapping) and value.get("enabled", True) is False:
                if name not in segments:
                    raise SegmentConfigError(f"segments.{name}.enabled: no such segment to disable")
                del segments[name]
            else:
                if isinstance(value, Mapping) and not isinstance(value.get("enabled", True), bool):
                    raise SegmentConfigError(f"segments.{name}.enabled: expected true or false")
                segments[name] = SegmentRule.from_dict(name, value)
        return cls(segments=segments, **kwargs)

    def stage(self, p: Profile, now_ms: int) -> str:
        return self.lifecycle.stage(p, now_ms)

    def members(self, p: Profile, now_ms: int) -> set[str]:
        """The segments *p* belongs to as of *now_ms*."""
        stage = self.stage(p, now_ms)
        return {n for n, rule in self.segments.items() if rule.matches(p, now_ms, stage)}

    def deadline(self, p: Profile, after_ms: int) -> int | None:
        """The next event time after *after_ms* at which time alone may change membership."""
        dues = [self.lifecycle.deadline(p, after_ms)]
        dues += [rule.deadline(p, after_ms) for rule in self._timed]
        later = [d for d in dues if d is not None and d > after_ms]
        return min(later) if later else None
