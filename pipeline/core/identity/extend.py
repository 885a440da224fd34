"""The common incremental step in time proportional to the event, not to the person."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from pipeline.core.identity.changes import ChangeKind, IdentityChange
from pipeline.core.identity.derive import MAX_ABSORBED, _Derivation
from pipeline.core.identity.rules import person_id_for
from pipeline.core.identity.state import (
    OrderKey,
    _Context,
    _members,
    _Op,
    _order,
    _Refusal,
    _to_identifier,
    _type,
)


class _Extension(_Derivation):
    """:meth:`_extend`, which :meth:`IdentityGraph.resolve` tries before the general
    incremental step (``_incremental`` + ``_commit``) and which gives exactly the same
    state and changes where it applies (a Hypothesis property checks it)."""

    #: Off in tests that compare the two paths.
    _fast_extend = True

    def _extend(
        self,
        op: _Op,
        old_of: Mapping[str, str | None],
        old_recs: Mapping[str, Any],
        order: OrderKey,
        ctx: _Context,
        changes: list[IdentityChange],
    ) -> dict[str, str] | None:
        """Apply an event whose strongest linkable identifier belongs to a person ``P``
        that stays the oldest of the persons the event touches.

        In priority order, each other person of the event is merged into ``P``, and
        each new identifier joins it, when ``P``'s limits and caps allow; otherwise it
        is refused and stays (or becomes) a person of its own. Cost: the event's
        identifiers and the persons merged into ``P``, never ``P``'s identifiers one by
        one, so a person at its caps (a bot's device, a shared account) costs the same
        per event as a new one. Returns every event identifier's person, or None when
        the event does not have that shape (then the general step runs).
        """
        link = ctx.link
        if not self._fast_extend or not link:
            return None
        anchor = old_of[link[0]]
        if anchor is None:
            return None
        if any(old_of[k] is not None for k in ctx.event_keys if k not in link):
            return None  # a super node of the event has a person (maybe P) to report
        record = old_recs[anchor]
        oldest = (_order(record["f"]), self._prio(record["n"]))
        for pid, rec in old_recs.items():
            if not order > _order(rec["f"]):
                return None  # a new identifier would be older than a person's first
            if pid != anchor and not (_order(rec["f"]), self._prio(rec["n"])) > oldest:
                return None  # the anchor would not survive the merge

        counts = {t: len(vs) for t, vs in record["ids"].items()}
        total = sum(counts.values())
        units: list[tuple[str | None, list[str]]] = []  # (person or None, event keys)
        unit_of: dict[str, list[str]] = {}
        for key in link:
            owner = old_of[key]
            if owner == anchor:
                continue
            if owner is None:
                units.append((None, [key]))
            elif owner in unit_of:
                unit_of[owner].append(key)
            else:
                unit_of[owner] = [key]
                units.append((owner, unit_of[owner]))
        accepted: list[str] = []
        merged: list[str] = []
        refused_new: list[str] = []
        refusals: list[_Refusal] = []
        for unit, keys in units:
            if unit is None:
                add = {_type(keys[0]): 1}
            else:
                add = {t: len(vs) for t, vs in old_recs[unit]["ids"].items()}
            size = sum(add.values())
            rule = self._breaks(counts, total, add, size)
            if rule is not None:
                refusals.append(_Refusal(keys[0], rule, keys))
                if unit is None:
                    refused_new.append(keys[0])
                continue
            for type_, n in add.items():
                counts[type_] = counts.get(type_, 0) + n
            total += size
            if unit is None:
                accepted.append(keys[0])
            else:
                merged.append(unit)
        ctx.acc_rep = link[0]
        ctx.refusals = refusals

        born = {person_id_for(k): k for k in refused_new}
        live = {anchor, *born, *(p for p in unit_of if p not in merged)}
        multi = len(link) >= 2
        pid_of: dict[str, str] = {k: anchor for k in link}
        out: list[tuple[str, IdentityChange]] = []
        # P: new identifiers and merged persons join it.
        moved: dict[str, list[str]] = {q: _members(old_recs[q]) for q in sorted(merged)}
        joining = [*accepted, *(k for keys in moved.values() for k in keys)]
        last = _later(record["last"], order if multi else None)
        absorbed = set(record["a"])
        for q in merged:
            last = _later(last, old_recs[q]["last"])
            absorbed.update(old_recs[q]["a"])
            absorbed.add(q)
        ids = record["ids"]
        if joining:
            grown = {t: list(vs) for t, vs in ids.items()}
            for key in joining:
                type_, _, value = key.partition(":")
                grown.setdefault(type_, []).append(value)
            ids = {
                t: sorted(grown[t])
                for t in sorted(grown, key=lambda t: (self._rank.get(t, self._low), t))
            }
        history = sorted(absorbed - live)[:MAX_ABSORBED] if merged else _without(record["a"], live)
        if ids is not record["ids"] or last is not record["last"] or history is not record["a"]:
            updated = {**record, "ids": ids, "last": last, "a": history}
            if updated != record:
                op.persons.set(anchor, updated)
        for key in joining:
            op.ident.set(key, anchor)
        top = f"deterministic:{_type(link[0])}"
        if accepted:
            new_ids = tuple(_to_identifier(k) for k in accepted)
            out.append((anchor, self._change(ChangeKind.MAP, ctx, anchor, None, new_ids, top)))
        for q, keys_of_q in moved.items():
            op.persons.delete(q)
            op.forward.set(q, anchor)
            moved_ids = tuple(_to_identifier(k) for k in sorted(keys_of_q, key=self._prio))
            out.append((anchor, self._change(ChangeKind.MERGE, ctx, anchor, q, moved_ids, top)))
        # Refused persons stay as they are, but this link touched them.
        for q, keys_of_q in unit_of.items():
            if q in merged:
                continue
            rec = old_recs[q]
            kept = {
                **rec,
                "last": _later(rec["last"], order),
                "a": _without(rec["a"], live),
            }
            if kept != rec:
                op.persons.set(q, kept)
            for key in keys_of_q:
                pid_of[key] = q
        # Refused new identifiers: a person each.
        for new_pid, key in born.items():
            type_, _, value = key.partition(":")
            first = _order(op.links.get(key)["f"])
            fresh = {"n": key, "f": list(first), "ids": {type_: [value]}, "last": list(order)}
            op.persons.set(new_pid, {**fresh, "a": []})
            if op.forward.get(new_pid) is not None:
                op.forward.delete(new_pid)  # an absorbed person that comes back
            op.ident.set(key, new_pid)
            pid_of[key] = new_pid
            own = f"deterministic:{type_}"
            change = self._change(ChangeKind.MAP, ctx, new_pid, None, (_to_identifier(key),), own)
            out.append((new_pid, change))
        out.sort(key=lambda item: item[0])
        changes.extend(change for _, change in out)
        return pid_of

    @staticmethod
    def _change(
        kind: ChangeKind,
        ctx: _Context,
        person: str,
        absorbed: str | None,
        identifiers: tuple[Any, ...],
        rule: str,
    ) -> IdentityChange:
        return IdentityChange(kind, ctx.at, person, absorbed, identifiers, rule, ctx.event_id)


def _later(last: Any, order: OrderKey | list[Any] | None) -> Any:
    """The newer of a stored ``last`` (``[at_ms, event_id]`` or None) and *order*."""
    if order is None:
        return last
    if last is None or _order(last) < _order(order):
        return list(order)
    return last


def _without(absorbed: list[str], live: set[str]) -> list[str]:
    """A stored (sorted, bounded) absorbed list less *live* persons, in O(|live| log n)
    when none is in it (the common case)."""
    for pid in live:
        pos = bisect.bisect_left(absorbed, pid)
        if pos < len(absorbed) and absorbed[pos] == pid:
            return [a for a in absorbed if a not in live]
    return absorbed
