"""The common incremental step in time proportional to the event, not to the person."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from pipeline.core.identity.changes import ChangeKind, IdentityChange
from pipeline.core.identity.derive import _Derivation
from pipeline.core.identity.rules import person_id_for
from pipeline.core.identity.state import (
    OrderKey,
    _Context,
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
        """Apply an event that touches one known person ``P`` through its strongest
        linkable identifier and otherwise brings only new identifiers.

        Each new identifier joins ``P`` when ``P``'s limit or cap for its type allows,
        else it becomes a person of its own (a refusal). Cost: the event's identifiers
        and ``P``'s record, never ``P``'s identifiers one by one, so a person at its caps
        (a bot's device, a shared account) costs the same per event as a new one.
        Returns every event identifier's person, or None when the event does not have
        that shape (then the general step runs).
        """
        link = ctx.link
        if not self._fast_extend or len(old_recs) != 1 or not link:
            return None
        ((pid, record),) = old_recs.items()
        if old_of[link[0]] != pid or not order > _order(record["f"]):
            return None  # another anchor, or a new identifier older than P's first
        if any(old_of[k] is not None for k in ctx.event_keys if k not in link):
            return None  # a super node of the event has a person (maybe P) to report
        counts = {t: len(vs) for t, vs in record["ids"].items()}
        total = sum(counts.values())
        most = self.rules.max_person_identifiers
        accepted: list[str] = []
        refused: list[str] = []
        refusals: list[_Refusal] = []
        for key in link:
            if old_of[key] is not None:
                continue
            type_ = _type(key)
            rule: str | None = None
            if counts.get(type_, 0) + 1 > self._bound(type_):
                rule = f"{'limit' if type_ in self._limits else 'cap'}:{type_}"
            elif total + 1 > most:
                rule = "cap:identifiers"
            if rule is not None:
                refused.append(key)
                refusals.append(_Refusal(key, rule, [key]))
            else:
                counts[type_] = counts.get(type_, 0) + 1
                total += 1
                accepted.append(key)
        ctx.acc_rep = link[0]
        ctx.refusals = refusals
        pid_of = {k: pid for k in link if k not in refused}
        born: list[tuple[str, str]] = [(person_id_for(k), k) for k in refused]
        last = record["last"]
        if len(link) >= 2 and (last is None or _order(last) < order):
            last = list(order)
        ids = record["ids"]
        if accepted:
            ids = {t: list(vs) for t, vs in ids.items()}
            for key in accepted:
                type_, _, value = key.partition(":")
                bisect.insort(ids.setdefault(type_, []), value)
            ids = {t: ids[t] for t in sorted(ids, key=lambda t: (self._rank.get(t, self._low), t))}
        live = {p for p, _ in born}
        absorbed = [a for a in record["a"] if a not in live] if live else record["a"]
        updated = {**record, "ids": ids, "last": last, "a": absorbed}
        if updated != record:
            op.persons.set(pid, updated)
        for key in accepted:
            op.ident.set(key, pid)
        out: list[tuple[str, IdentityChange]] = []
        if accepted:
            top = f"deterministic:{_type(link[0])}"
            keys = tuple(_to_identifier(k) for k in accepted)
            change = IdentityChange(ChangeKind.MAP, ctx.at, pid, None, keys, top, ctx.event_id)
            out.append((pid, change))
        for new_pid, key in born:
            first = _order(op.links.get(key)["f"])
            type_, _, value = key.partition(":")
            new_record = {
                "n": key,
                "f": list(first),
                "ids": {type_: [value]},
                "last": list(order),
                "a": [],
            }
            op.persons.set(new_pid, new_record)
            if op.forward.get(new_pid) is not None:
                op.forward.delete(new_pid)  # an absorbed person that comes back
            op.ident.set(key, new_pid)
            pid_of[key] = new_pid
            own = f"deterministic:{type_}"
            change = IdentityChange(
                ChangeKind.MAP, ctx.at, new_pid, None, (_to_identifier(key),), own, ctx.event_id
            )
            out.append((new_pid, change))
        out.sort(key=lambda item: item[0])
        changes.extend(change for _, change in out)
        return pid_of
