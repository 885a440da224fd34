"""Audiences: each person's segment membership, entered and exited in event time.

A :class:`PersonState` holds one person's folded :class:`~pipeline.core.profiles.Profile`,
the signals not folded yet, the event ids already folded (bounded) and the segments the
person is in. :class:`Audiences` moves a state forward to a clock: the newest signal time
of the stream less the allowed lateness. Signals newer than the clock wait; when the
clock passes them they are folded in event-time order, and membership is evaluated at
every signal time and at every time a rule's window runs out (24 h after a cart add,
say), so entries and exits carry the event time at which they became true. A late
order inside the allowed lateness thus never makes ``abandoned_cart`` enter and then
exit: both are decided together once the clock passes. Versions count changes in
processing order. Pure: no I/O. See ``docs/segments.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.profiles import Profile, ProfileError, Signal
from pipeline.core.segments import SegmentRules


@dataclass(frozen=True, slots=True)
class Change:
    """One segment entry or exit (``schemas/AudienceChange.avsc``)."""

    person_id: str
    segment: str
    entered: bool
    at_ms: int
    entered_at_ms: int
    reason: str
    version: int

    def to_record(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "segment": self.segment,
            "change": "ENTERED" if self.entered else "EXITED",
            "at": self.at_ms,
            "entered_at": self.entered_at_ms,
            "reason": self.reason,
            "version": self.version,
        }


@dataclass
class PersonState:
    person_id: str
    profile: Profile = field(default_factory=Profile)
    pending: dict[str, Signal] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    evaluated_ms: int = 0
    members: dict[str, int] = field(default_factory=dict)
    stage: str = ""
    version: int = 0

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person_id,
            "profile": self.profile.to_dict(),
            "pending": [s.to_record() for s in self.pending.values()],
            "seen": list(self.seen),
            "evaluated": self.evaluated_ms,
            "members": dict(self.members),
            "stage": self.stage,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PersonState:
        try:
            pending = [Signal.from_record(r) for r in raw["pending"]]
            return cls(
                person_id=str(raw["person"]),
                profile=Profile.from_dict(raw["profile"]),
                pending={s.event_id: s for s in pending},
                seen=[str(e) for e in raw["seen"]],
                evaluated_ms=int(raw["evaluated"]),
                members={str(k): int(v) for k, v in raw["members"].items()},
                stage=str(raw["stage"]),
                version=int(raw["version"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"stored person state unreadable: {exc!r}") from exc


@dataclass
class Result:
    changes: list[Change] = field(default_factory=list)
    #: The profile (or its lifecycle stage) changed: a new persons row is due.
    profile_changed: bool = False
    duplicate: bool = False


class Audiences:
    """Moves person states forward under one set of :class:`SegmentRules`."""

    def __init__(self, rules: SegmentRules | None = None) -> None:
        self.rules = rules or SegmentRules()

    def add(self, state: PersonState, signal: Signal, clock_ms: int) -> Result:
        """One signal of *state*'s person, then :meth:`advance` to *clock_ms*."""
        if signal.event_id in state.pending or signal.event_id in state.seen:
            return Result(duplicate=True)
        if state.evaluated_ms and signal.at_ms <= state.evaluated_ms:
            # Later than the allowed lateness: folded now, a correction at the clock.
            result = Result(profile_changed=True)
            self._fold(state, signal)
            self._diff(state, state.evaluated_ms, f"late {signal.kind}", result)
            self._advance(state, clock_ms, result)
            return result
        state.pending[signal.event_id] = signal
        self._cap_pending(state)
        return self.advance(state, clock_ms)

    def advance(self, state: PersonState, clock_ms: int) -> Result:
        """Fold the signals the clock has passed; enter and exit segments on the way."""
        result = Result()
        self._advance(state, clock_ms, result)
        return result

    def _advance(self, state: PersonState, clock_ms: int, result: Result) -> None:
        t = state.evaluated_ms
        if clock_ms <= t:
            return
        rules = self.rules
        while True:
            due_signal = min((s.at_ms for s in state.pending.values()), default=None)
            if due_signal is not None and due_signal > clock_ms:
                due_signal = None
            due_time = rules.deadline(state.profile, t) if state.profile.signals else None
            if due_time is not None and due_time > clock_ms:
                due_time = None
            if due_signal is None and due_time is None:
                break
            if due_time is not None and (due_signal is None or due_time < due_signal):
                t = due_time
                self._diff(state, t, "time", result)
                continue
            t = int(due_signal)  # type: ignore[arg-type]
            now = sorted(
                (s for s in state.pending.values() if s.at_ms == t), key=lambda s: s.event_id
            )
            for s in now:
                del state.pending[s.event_id]
                self._fold(state, s)
            result.profile_changed = True
            self._diff(state, t, ",".join(sorted({s.kind for s in now})), result)
        state.evaluated_ms = clock_ms
        state.profile.trim(clock_ms, rules.history_ms, rules.max_signals)

    def _fold(self, state: PersonState, signal: Signal) -> None:
        state.profile.add(signal)
        state.seen.append(signal.event_id)
        if len(state.seen) > self.rules.dedup_ids:
            del state.seen[: len(state.seen) - self.rules.dedup_ids]

    def _cap_pending(self, state: PersonState) -> None:
        """More pending signals than the cap: the oldest are folded early."""
        while len(state.pending) > self.rules.max_signals:
            oldest = min(state.pending.values(), key=lambda s: (s.at_ms, s.event_id))
            del state.pending[oldest.event_id]
            self._fold(state, oldest)

    def _diff(self, state: PersonState, at_ms: int, reason: str, result: Result) -> None:
        rules = self.rules
        stage = rules.stage(state.profile, at_ms) if state.profile.signals else ""
        if stage != state.stage:
            state.stage = stage
            result.profile_changed = True
        want = rules.members(state.profile, at_ms)
        for segment in sorted(set(state.members) - want):
            entered = state.members.pop(segment)
            result.changes.append(
                Change(
                    state.person_id, segment, False, at_ms, entered, reason, state.next_version()
                )
            )
        for segment in sorted(want - set(state.members)):
            state.members[segment] = at_ms
            result.changes.append(
                Change(state.person_id, segment, True, at_ms, at_ms, reason, state.next_version())
            )

    def exit_all(self, state: PersonState, reason: str) -> list[Change]:
        """Every segment of *state* exited (its person was absorbed by a merge)."""
        at = state.evaluated_ms
        changes = [
            Change(state.person_id, seg, False, at, entered, reason, state.next_version())
            for seg, entered in sorted(state.members.items())
        ]
        state.members.clear()
        return changes

    def merge(self, survivor: PersonState, absorbed: PersonState, clock_ms: int) -> Result:
        """The absorbed person's signals join the survivor's; membership re-evaluated.

        The absorbed state's segments must already have been exited (:meth:`exit_all`).
        """
        result = Result(profile_changed=True)
        survivor.profile.merge(absorbed.profile)
        survivor.seen = [*survivor.seen, *(e for e in absorbed.seen if e not in survivor.seen)]
        for event_id, signal in absorbed.pending.items():
            if event_id not in survivor.seen:
                survivor.pending.setdefault(event_id, signal)
        survivor.version = max(survivor.version, absorbed.version)
        at = max(survivor.evaluated_ms, absorbed.evaluated_ms)
        late = [s for s in survivor.pending.values() if s.at_ms <= at]
        for s in sorted(late, key=lambda s: (s.at_ms, s.event_id)):
            del survivor.pending[s.event_id]
            self._fold(survivor, s)
        survivor.evaluated_ms = at
        self._diff(survivor, at, f"merge of {absorbed.person_id}", result)
        self._cap_pending(survivor)
        self._advance(survivor, clock_ms, result)
        return result

    def next_due(self, state: PersonState) -> int | None:
        """The clock at which :meth:`advance` would next change *state* (None: never)."""
        dues = [s.at_ms for s in state.pending.values()]
        if state.profile.signals:
            due = self.rules.deadline(state.profile, state.evaluated_ms)
            if due is not None:
                dues.append(due)
        return min(dues) if dues else None

    def profile_record(self, state: PersonState, version: int) -> dict[str, Any]:
        """The PersonProfile record (``schemas/PersonProfile.avsc``) of *state*."""
        p, now = state.profile, state.evaluated_ms
        return {
            "person_id": state.person_id,
            "as_of": now,
            "first_seen": p.first_seen_ms,
            "last_seen": p.last_seen_ms,
            "channels": dict(p.channels),
            "devices": dict(p.devices),
            "platforms": dict(p.platforms),
            "email_opens": p.count("email_opens"),
            "email_clicks": p.count("email_clicks"),
            "sms_clicks": p.count("sms_clicks"),
            "push_opens": p.count("push_opens"),
            "app_screens": p.count("app_screens"),
            "store_visits": p.count("store_visits"),
            "qr_scans": p.count("qr_scans"),
            "wifi_logins": p.count("wifi_logins"),
            "orders": p.orders,
            "revenue": p.revenue,
            "average_order_value": p.aov,
            "purchase_frequency": p.purchase_frequency(now),
            "mean_days_between_orders": p.mean_days_between_orders,
            "last_purchase": p.last_order_ms or None,
            "bopis_orders": p.bopis_orders,
            "preferred_channel": p.preferred_channel,
            "app_user": p.app_user,
            "cart_items": p.cart_items,
            "cart_value": p.cart_value,
            "cart_since": p.cart_since_ms or None,
            "lifecycle_stage": state.stage,
            "segments": sorted(state.members),
            "merged_into": None,
            "version": version,
        }
