"""The identity graph: the fast path, the owner's ``resolve`` and ``forget``."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pipeline.core.identity.changes import ChangeKind, IdentityChange, Resolution
from pipeline.core.identity.extend import _Extension
from pipeline.core.identity.rules import (
    IdentityError,
    IdentityRules,
    _check_type,
    _clean,
    _ephemeral_person,
)
from pipeline.core.identity.state import (
    VERSION_KEY,
    IdentityStores,
    OrderKey,
    _Context,
    _members,
    _Op,
    _order,
    _refile,
    _Refusal,
    _shape_id,
    _to_identifier,
    _type,
)
from pipeline.core.model import Identifier, from_millis


class IdentityGraph(_Extension):
    """The identity graph: :meth:`lookup` (fast path), :meth:`resolve` (the owner),
    :meth:`forget`, :meth:`members` and :meth:`canonical`.

    One ``IdentityGraph`` instance (per shard) must be the single writer of its
    stores; :meth:`lookup` may run anywhere that can read them.
    """

    def __init__(
        self, rules: IdentityRules | None = None, stores: IdentityStores | None = None
    ) -> None:
        self.rules = rules if rules is not None else IdentityRules()
        self.stores = stores if stores is not None else IdentityStores()
        self._rank = {t: i for i, t in enumerate(self.rules.priority)}
        self._low = len(self.rules.priority)
        self._limits = dict(self.rules.limits)
        self._caps = dict(self.rules.caps)
        self._default_cap = self.rules.default_cap
        self._guarded = frozenset(self.rules.super_node_types)
        self._threshold = self.rules.super_node_threshold
        self._blocked = self.rules.blocklist

    # ------------------------------------------------------------------ queries

    def canonical(self, person_id: str) -> str:
        """The live person that ``person_id`` now is, following forwards (path-compressed)."""
        return self._follow(person_id, compress=True)

    def _follow(self, person_id: str, *, compress: bool) -> str:
        forward = self.stores.forward
        target = forward.get(person_id)
        if target is None:
            return person_id
        path = [person_id]
        seen = {person_id}
        while True:
            nxt = forward.get(target)
            if nxt is None:
                break
            if target in seen:
                raise IdentityError(f"forwarding cycle through person {target}")
            seen.add(target)
            path.append(target)
            target = nxt
        if compress:
            for pid in path[:-1]:
                forward[pid] = target
        return target

    def members(self, person_id: str) -> dict[str, list[str]]:
        """The identifiers of a person (after forwarding), by type; empty if unknown."""
        record = self.stores.persons.get(self._follow(person_id, compress=False))
        if record is None:
            return {}
        return {t: list(values) for t, values in record["ids"].items()}

    def person_of(self, identifier: Identifier) -> str | None:
        """The live person of one identifier, or None."""
        pid = self.stores.ident_to_person.get(f"{identifier.type}:{identifier.value}")
        return None if pid is None else self._follow(pid, compress=False)

    def partition(self) -> dict[str, str]:
        """Every known identifier ``"type:value"`` with its person (for evaluation)."""
        return {k: self._follow(p, compress=False) for k, p in self.stores.ident_to_person.items()}

    def lookup(self, identifiers: Iterable[Identifier], at_ms: int | None = None) -> str | None:
        """The fast path: the event's person when the owner is not needed, else None.

        Read-only. Returns a person when every non-blocklisted identifier is known
        and all map (after forwarding) to the same person *and* this exact
        identifier set was resolved before (so the event cannot change the graph).
        With ``at_ms``, the earlier resolution must also be strictly older, because
        an earlier copy of a set can reorder the graph; without it, that last check
        is skipped. ``resolve`` of the same event then returns the same person with
        no changes.
        """
        usable, junk = self._normalise(identifiers)
        if not usable:
            return None
        ident = self.stores.ident_to_person
        person = ident.get(usable[0])
        if person is None or any(ident.get(key) != person for key in usable[1:]):
            return None
        shape = self.stores.shapes.get(_shape_id([*usable, *junk]))
        if shape is None or (at_ms is not None and at_ms <= int(shape[0])):
            return None
        return self._follow(person, compress=False)

    # ------------------------------------------------------------------ resolve

    def resolve(self, identifiers: Iterable[Identifier], event_id: str, at_ms: int) -> Resolution:
        """Stitch one event: map its identifiers, merge or refuse, and return its person.

        The event's person is the person of its highest-priority linkable
        identifier; if all its identifiers are super nodes, the strongest super
        node's person; if all are junk, an ephemeral ``uuid5("event:<event_id>")``.
        Resolving an event again (same identifiers, ``event_id`` and ``at_ms``), or
        a later event with an identifier set already resolved, changes nothing.
        """
        if not isinstance(event_id, str) or not event_id:
            raise IdentityError("event_id: must be a non-empty string")
        if isinstance(at_ms, bool) or not isinstance(at_ms, int):
            raise IdentityError("at_ms: must be an integer (epoch milliseconds)")
        capped: list[tuple[str, list[str]]] = []
        usable, junk = self._normalise(identifiers, capped)
        order: OrderKey = (at_ms, event_id)
        sid = _shape_id([*usable, *junk])
        op = _Op(self.stores)
        stored = op.shapes.get(sid)
        if (
            stored is not None
            and _order(stored) <= order
            and all(op.ident.get(k) is not None for k in usable)
        ):
            return Resolution(self._event_person(op, list(stored[2]), usable, event_id), [])

        at = from_millis(at_ms)
        changes: list[IdentityChange] = []
        if not usable:
            op.shapes.set(sid, [at_ms, event_id, []])
            person = _ephemeral_person(event_id)
            if junk or not capped:
                changes.append(self._blocklist_change(at, person, junk, event_id))
            changes[:0] = self._capped_changes(at, person, capped, event_id)
            changes = _stamp(op, changes)
            op.flush()
            return Resolution(person, changes)

        ctx, seeds, flipped = self._register(op, usable, sid, order, at, event_id)
        old_of = {k: op.ident.get(k) for k in usable}
        touched = sorted({p for p in old_of.values() if p is not None})
        old_recs = {p: self._person_record(op, p) for p in touched}
        replay = bool(flipped)
        if not replay and len(ctx.link) >= 2:
            for key in ctx.link:
                pid = old_of[key]
                last = None if pid is None else old_recs[pid]["last"]
                if last is not None and _order(last) >= order:
                    replay = True
                    break
        region_info = self._region(op, seeds) if replay else None
        others: list[tuple[OrderKey, str, _Refusal]] = []
        pid_of: dict[str, str] | None = None
        if region_info is not None:
            region, shapes, persons = region_info
            old_recs = {p: self._person_record(op, p) for p in sorted(persons)}
            scratch, last_of = self._rederive(region, shapes, ctx, others)
        elif not flipped:
            pid_of = self._extend(op, old_of, old_recs, order, ctx, changes)
        if pid_of is None:
            if region_info is None:
                scratch, last_of, region = self._incremental(
                    op, old_recs, usable, flipped, order, ctx
                )
            pid_of = self._commit(op, scratch, region, old_recs, last_of, ctx, changes)
        person = pid_of[ctx.link[0]] if ctx.link else pid_of[usable[0]]
        if junk:
            changes.insert(0, self._blocklist_change(at, person, junk, event_id))
        changes[:0] = self._capped_changes(at, person, capped, event_id)
        for refusal in ctx.refusals:
            changes.append(
                IdentityChange(
                    ChangeKind.REFUSED,
                    at,
                    pid_of[ctx.acc_rep] if ctx.acc_rep is not None else person,
                    pid_of[refusal.rep],
                    tuple(_to_identifier(k) for k in refusal.keys),
                    refusal.rule,
                    event_id,
                )
            )
        # A re-derivation in event-time order may refuse links that arrived earlier
        # and were accepted then: their refusals are recorded too, under their own
        # event, so every refused link has an audit row whatever the arrival order.
        for (other_ms, other_event), anchor, refusal in others:
            changes.append(
                IdentityChange(
                    ChangeKind.REFUSED,
                    from_millis(other_ms),
                    pid_of[anchor],
                    pid_of[refusal.rep],
                    tuple(_to_identifier(k) for k in refusal.keys),
                    refusal.rule,
                    other_event,
                )
            )
        if len(usable) >= 2:
            for key in usable:
                if key not in ctx.link:
                    changes.append(
                        IdentityChange(
                            ChangeKind.REFUSED,
                            at,
                            person,
                            pid_of[key],
                            (_to_identifier(key),),
                            f"super_node:{_type(key)}",
                            event_id,
                        )
                    )
        changes = _stamp(op, changes)
        op.flush()
        return Resolution(person, changes)

    def _register(
        self,
        op: _Op,
        usable: list[str],
        sid: str,
        order: OrderKey,
        at: datetime,
        event_id: str,
    ) -> tuple[_Context, set[str], list[str]]:
        """Record the event's shape and identifiers (first seen, links, co-occurrences,
        super nodes) in the buffers; return the context, replay seeds and new super nodes."""
        recs: dict[str, Any] = {k: op.links.get(k) for k in usable}
        strong = [k for k in usable if _type(k) in self._limits]
        flipped: list[str] = []
        co_of: dict[str, dict[str, list[str]]] = {}
        # The shape links each of these unless it is a super node (or becomes one).
        may_link = sum(1 for k in usable if recs[k] is None or not recs[k]["s"]) >= 2
        max_sets = self.rules.max_link_sets
        for key in usable:
            if _type(key) not in self._guarded:
                continue
            rec = recs[key]
            if rec is not None and rec["s"]:
                continue
            co = {t: list(vs) for t, vs in rec["co"].items()} if rec is not None else {}
            for other in strong:
                if other == key:
                    continue
                type_, _, value = other.partition(":")
                values = co.setdefault(type_, [])
                if value not in values:
                    bisect.insort(values, value)
            if any(len(vs) > self._threshold for vs in co.values()) or (
                may_link and rec is not None and _is_full(rec["e"], sid, max_sets)
            ):
                flipped.append(key)
            else:
                co_of[key] = co
        seeds = set(usable)
        for key in flipped:
            rec = recs[key]
            if rec is None:
                continue
            for shape_id in (*rec["e"], *rec["o"]):
                shape = op.shapes.get(shape_id)
                if shape is not None and key in shape[2]:
                    rest = [x for x in shape[2] if x != key]
                    op.shapes.set(shape_id, [shape[0], shape[1], rest])
                    seeds.update(rest)  # their persons' "last" may have been this link
                    if len(rest) == 1:  # no longer a link: file it with the other shapes
                        moved = _refile(op.links.get(rest[0]), shape_id)
                        if moved is not None:
                            op.links.set(rest[0], moved)
                            if rest[0] in recs:
                                recs[rest[0]] = moved
        supers = {k for k in usable if k in flipped or (recs[k] is not None and recs[k]["s"])}
        link = [k for k in usable if k not in supers]
        multi = len(link) >= 2
        for key in usable:
            rec = recs[key]
            first = order if rec is None else min(_order(rec["f"]), order)
            new: dict[str, Any]
            if key in supers:
                new = {"f": list(first), "e": [], "o": [], "co": {}, "s": True}
            else:
                # Lists are copied only when they change (they hold up to max_sets ids).
                linked: list[str] = rec["e"] if rec is not None else []
                other_shapes: list[str] = rec["o"] if rec is not None else []
                bucket = linked if multi else other_shapes
                full = rec is not None and bool(rec.get("x"))
                pos = bisect.bisect_left(bucket, sid)
                if pos < len(bucket) and bucket[pos] == sid:
                    pass  # listed already
                elif len(bucket) >= max_sets:
                    full = True  # not listed: the component is no longer re-derived
                elif multi:
                    linked = [*linked[:pos], sid, *linked[pos:]]
                else:
                    other_shapes = [*other_shapes[:pos], sid, *other_shapes[pos:]]
                co = co_of.get(key, {})
                new = {"f": list(first), "e": linked, "o": other_shapes, "co": co, "s": False}
                if full:
                    new["x"] = True
            if new != rec:
                op.links.set(key, new)
        op.shapes.set(sid, [order[0], order[1], link])
        ctx = _Context(
            at=at,
            event_id=event_id,
            event_keys=list(usable),
            link=link,
            move_rule=f"super_node:{_type(flipped[0])}" if flipped else "reorder",
        )
        return ctx, seeds, flipped

    # ------------------------------------------------------------------ forget

    def forget(
        self,
        person_id: str,
        *,
        at_ms: int | None = None,
        changes: list[IdentityChange] | None = None,
    ) -> list[Identifier]:
        """Erase a person: its identifiers, links and co-occurrences, and forwards to it.

        Returns the erased identifiers (empty if the person is unknown). The
        ``FORGET`` change (and any ``MAP`` with rule ``forget`` for neighbours whose
        component is re-derived without the erased identifiers) is appended to
        ``changes`` when given. ``at_ms`` stamps the changes (default: now).
        """
        op = _Op(self.stores)
        pid = self._follow(person_id, compress=False)
        record = op.persons.get(pid)
        if record is None:
            return []
        at = from_millis(at_ms) if at_ms is not None else datetime.now(UTC)
        gone = _members(record)
        gone_set = set(gone)
        gone_values: dict[str, set[str]] = {}
        for key in gone:
            type_, _, value = key.partition(":")
            gone_values.setdefault(type_, set()).add(value)
        neighbours: set[str] = set()
        for key in gone:
            rec = op.links.get(key)
            if rec is None:
                continue
            for shape_id in (*rec["e"], *rec["o"]):
                shape = op.shapes.get(shape_id)
                if shape is None:
                    continue
                rest = [x for x in shape[2] if x not in gone_set]
                neighbours.update(rest)
                if len(rest) != len(shape[2]):
                    op.shapes.set(shape_id, [shape[0], shape[1], rest])
                    if len(rest) == 1:
                        moved = _refile(op.links.get(rest[0]), shape_id)
                        if moved is not None:
                            op.links.set(rest[0], moved)
            op.links.delete(key)
            op.ident.delete(key)
        for key in sorted(neighbours):
            rec = op.links.get(key)
            if rec is None or not rec["co"]:
                continue
            co = {
                t: [v for v in vs if v not in gone_values.get(t, ())] for t, vs in rec["co"].items()
            }
            co = {t: vs for t, vs in co.items() if vs}
            if co != rec["co"]:
                op.links.set(key, {**rec, "co": co})
        op.persons.delete(pid)
        for absorbed in record["a"]:
            op.forward.delete(absorbed)
        op.forward.delete(pid)
        out: list[IdentityChange] = []
        if neighbours:
            region_info = self._region(op, neighbours)
            if region_info is not None:
                region, shapes, persons = region_info
                ctx = _Context(at, None, [], [], move_rule="forget")
                old_recs = {p: self._person_record(op, p) for p in sorted(persons)}
                scratch, last_of = self._rederive(region, shapes, None)
                self._commit(op, scratch, region, old_recs, last_of, ctx, out)
        identifiers = [_to_identifier(k) for k in sorted(gone, key=self._prio)]
        out.append(
            IdentityChange(ChangeKind.FORGET, at, pid, None, tuple(identifiers), "forget", None)
        )
        out = _stamp(op, out)
        op.flush()
        if changes is not None:
            changes.extend(out)
        return identifiers

    # ------------------------------------------------------------------ helpers

    def _normalise(
        self, identifiers: Iterable[Identifier], capped: list[tuple[str, list[str]]] | None = None
    ) -> tuple[list[str], list[str]]:
        """Usable identifier keys (deduplicated, priority order) and junk keys (sorted).

        Values longer than ``max_value_length`` and identifiers past the event's first
        ``max_identifiers_per_event`` are left out; with *capped*, they are listed there
        (at most that many, values cut to that length) under their rule.
        """
        usable: dict[str, tuple[int, str, str]] = {}
        junk: set[str] = set()
        long_values: list[str] = []
        max_length = self.rules.max_value_length
        for ident in identifiers:
            if not isinstance(ident, Identifier):
                raise IdentityError(f"identifiers: expected Identifier, got {type(ident).__name__}")
            type_ = _check_type(ident.type, "identifiers")
            value = ident.value
            if not isinstance(value, str):
                raise IdentityError(f"identifiers: the value of a {type_} must be a string")
            if len(value) > max_length:
                long_values.append(f"{type_}:{value[:max_length]}")
                continue
            key = f"{type_}:{value}"
            if _clean(value) in self._blocked:
                junk.add(key)
            else:
                usable[key] = (self._rank.get(type_, self._low), type_, value)
        keys = sorted(usable, key=usable.__getitem__)
        most = self.rules.max_identifiers_per_event
        if capped is not None:
            if long_values:
                capped.append(("cap:value_length", sorted(set(long_values))[:most]))
            if len(keys) > most:
                capped.append(("cap:identifiers_per_event", keys[most : 2 * most]))
        return keys[:most], sorted(junk)[:most]

    def _event_person(self, op: _Op, link: list[str], usable: list[str], event_id: str) -> str:
        if not usable:
            return _ephemeral_person(event_id)
        key = link[0] if link else usable[0]
        pid = op.ident.get(key)
        if pid is None:
            raise IdentityError(f"inconsistent identity state: {_type(key)} has no person")
        return str(pid)

    def _capped_changes(
        self, at: datetime, person: str, capped: list[tuple[str, list[str]]], event_id: str
    ) -> list[IdentityChange]:
        return [
            IdentityChange(
                ChangeKind.REFUSED,
                at,
                person,
                None,
                tuple(_to_identifier(k) for k in keys),
                rule,
                event_id,
            )
            for rule, keys in capped
        ]

    def _blocklist_change(
        self, at: datetime, person: str, junk: list[str], event_id: str
    ) -> IdentityChange:
        return IdentityChange(
            ChangeKind.REFUSED,
            at,
            person,
            None,
            tuple(_to_identifier(k) for k in junk),
            "blocklist",
            event_id,
        )


def _stamp(op: _Op, changes: list[IdentityChange]) -> list[IdentityChange]:
    """*changes* with processing-order versions: the next numbers of the sequence kept
    in the stores (:data:`VERSION_KEY`), which is written back in the same operation, so
    versions only go forward across restarts and a redelivered event that changes
    nothing takes none."""
    if not changes:
        return changes
    last = op.shapes.get(VERSION_KEY)
    base = int(last) if last is not None else 0
    op.shapes.set(VERSION_KEY, base + len(changes))
    return [replace(c, version=base + i) for i, c in enumerate(changes, start=1)]


def _is_full(bucket: list[str], sid: str, max_sets: int) -> bool:
    """Whether the sorted shape list *bucket* is at its bound and lacks *sid*."""
    if len(bucket) < max_sets:
        return False
    pos = bisect.bisect_left(bucket, sid)
    return pos == len(bucket) or bucket[pos] != sid
