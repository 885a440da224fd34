"""Linking and re-deriving components: the union-find steps behind :meth:`resolve`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.core.identity.changes import ChangeKind, IdentityChange
from pipeline.core.identity.rules import IdentityError, IdentityRules, person_id_for
from pipeline.core.identity.state import (
    OrderKey,
    _bump,
    _Context,
    _Group,
    _members,
    _Op,
    _order,
    _Refusal,
    _Scratch,
    _to_identifier,
    _type,
)

#: Most absorbed person ids a person record lists (history, bounded like the rest).
MAX_ABSORBED = 1_000


class _Derivation:
    """The steps of :class:`~pipeline.core.identity.graph.IdentityGraph` that link
    identifier sets, re-derive components and turn the result into changes."""

    rules: IdentityRules
    _rank: dict[str, int]
    _low: int
    _limits: dict[str, int]
    _caps: dict[str, int]
    _default_cap: int

    def _incremental(
        self,
        op: _Op,
        old_recs: Mapping[str, Any],
        usable: list[str],
        flipped: list[str],
        order: OrderKey,
        ctx: _Context,
    ) -> tuple[_Scratch, dict[int, OrderKey], set[str]]:
        """Apply the event to the persons it touches, in arrival order.

        Exact (equal to re-deriving in event-time order) when the event is newer
        than every link of those persons; also the fallback for huge components.
        """
        scratch = _Scratch()
        flipped_set = set(flipped)
        last_of: dict[int, OrderKey] = {}
        lasts: list[tuple[str, OrderKey]] = []
        for record in old_recs.values():
            keys = [k for k in _members(record) if k not in flipped_set]
            if not keys:
                continue
            scratch.add(keys)
            if record["last"] is not None:
                lasts.append((keys[0], _order(record["last"])))
        for key in usable:
            if key not in ctx.link and key not in scratch.group_of:
                scratch.add((key,))
        if ctx.link:
            self._step(scratch, ctx.link, ctx)
            if len(ctx.link) >= 2:
                for key in ctx.link:
                    _bump(last_of, scratch.group_of[key], order)
        for key, last in lasts:  # after the unions: a merged person's "last" is kept
            _bump(last_of, scratch.group_of[key], last)
        return scratch, last_of, set(scratch.group_of)

    def _step(
        self,
        scratch: _Scratch,
        link: Sequence[str],
        ctx: _Context | None,
        others: list[tuple[str, _Refusal]] | None = None,
    ) -> None:
        """Link one identifier set: merge every group into the anchor's group in
        priority order, refusing a group that would break a limit. Refusals go to
        *ctx* (the event's own link) or, with the anchor, to *others*."""
        order: list[_Group] = []
        event_keys: dict[int, list[str]] = {}
        for key in link:
            group = scratch.get(key)
            keys = event_keys.get(id(group))
            if keys is None:
                event_keys[id(group)] = [key]
                order.append(group)
            else:
                keys.append(key)
        acc = order[0]
        refusals: list[_Refusal] = []
        for group in order[1:]:
            broken = self._violation(acc, group)
            if broken is None:
                acc = scratch.union(acc, group)
            elif ctx is not None or others is not None:
                keys = event_keys[id(group)]
                refusals.append(_Refusal(keys[0], broken, keys))
        if ctx is not None:
            ctx.acc_rep = link[0]
            ctx.refusals = refusals
        elif others is not None:
            others.extend((link[0], refusal) for refusal in refusals)

    def _bound(self, type_: str) -> int:
        limit = self._limits.get(type_)
        return limit if limit is not None else self._caps.get(type_, self._default_cap)

    def _violation(self, a: _Group, b: _Group) -> str | None:
        """The rule a union of *a* and *b* would break, or None."""
        return self._breaks(a.counts, len(a.members), b.counts, len(b.members))

    def _breaks(
        self, counts: Mapping[str, int], total: int, add: Mapping[str, int], size: int
    ) -> str | None:
        """The rule that adding *add* (per-type counts, *size* in all) to a person with
        *counts* (*total*) would break: ``limit:<type>`` or ``cap:<type>`` for the
        strongest type, else ``cap:identifiers``; None if it fits."""
        worst: tuple[int, str] | None = None
        for type_, n in add.items():
            if counts.get(type_, 0) + n > self._bound(type_):
                cand = (self._rank.get(type_, self._low), type_)
                if worst is None or cand < worst:
                    worst = cand
        if worst is None:
            if total + size > self.rules.max_person_identifiers:
                return "cap:identifiers"
            return None
        return f"{'limit' if worst[1] in self._limits else 'cap'}:{worst[1]}"

    def _region(
        self, op: _Op, seeds: Iterable[str]
    ) -> tuple[set[str], dict[str, Any], set[str]] | None:
        """The connected component(s) of ``seeds``: identifiers reachable through
        linking shapes (not through super nodes) and through current persons.

        None when it is larger than ``max_replay_identifiers`` or reaches an identifier
        whose shapes are not all listed (past ``max_link_sets``). Erased identifiers and
        super nodes are taken out of the shapes (an unlisted shape may still hold one).
        """
        cap = self.rules.max_replay_identifiers
        region: set[str] = set()
        shapes: dict[str, Any] = {}
        persons: set[str] = set()
        stack = sorted(seeds, reverse=True)
        while stack:
            key = stack.pop()
            if key in region:
                continue
            region.add(key)
            if len(region) > cap:
                return None
            pid = op.ident.get(key)
            if pid is not None and pid not in persons:
                persons.add(pid)
                stack.extend(_members(self._person_record(op, pid)))
            rec = op.links.get(key)
            if rec is None or rec["s"]:
                continue
            if rec.get("x"):
                return None
            for shape_id in rec["e"]:
                if shape_id in shapes:
                    continue
                shape = op.shapes.get(shape_id)
                if shape is None:
                    continue
                shapes[shape_id] = shape
                stack.extend(x for x in shape[2] if x not in region)
        gone = {k for k in region if op.links.get(k) is None and op.ident.get(k) is None}
        region -= gone
        cut = gone | {k for k in region if (op.links.get(k) or {}).get("s")}
        if cut:
            shapes = {
                sid: [s[0], s[1], [x for x in s[2] if x not in cut]] for sid, s in shapes.items()
            }
        return region, shapes, persons

    def _rederive(
        self,
        region: set[str],
        shapes: Mapping[str, Any],
        ctx: _Context | None,
        others: list[tuple[OrderKey, str, _Refusal]] | None = None,
    ) -> tuple[_Scratch, dict[int, OrderKey]]:
        """Re-derive a component from scratch: its distinct links, each at its
        earliest event, processed in ``(at_ms, event_id)`` order. The refusals of
        links other than the event's own go to *others* with their event's order."""
        edges: dict[tuple[str, ...], OrderKey] = {}
        for shape in shapes.values():
            link = tuple(shape[2])
            if len(link) < 2:
                continue
            key = _order(shape)
            prev = edges.get(link)
            if prev is None or key < prev:
                edges[link] = key
        scratch = _Scratch()
        target = tuple(ctx.link) if ctx is not None else None
        for link, key in sorted(edges.items(), key=lambda item: (item[1], item[0])):
            if link == target:
                self._step(scratch, link, ctx)
            elif others is not None:
                found: list[tuple[str, _Refusal]] = []
                self._step(scratch, link, None, found)
                others.extend((key, anchor, refusal) for anchor, refusal in found)
            else:
                self._step(scratch, link, None)
        for ident in sorted(region):
            if ident not in scratch.group_of:
                scratch.add((ident,))
        if ctx is not None and ctx.acc_rep is None and ctx.link:
            ctx.acc_rep = ctx.link[0]
        last_of: dict[int, OrderKey] = {}
        for shape in shapes.values():  # every shape, as the arrival-order path counts them
            if len(shape[2]) >= 2:
                key = _order(shape)
                for member in shape[2]:
                    _bump(last_of, scratch.group_of[member], key)
        return scratch, last_of

    def _commit(
        self,
        op: _Op,
        scratch: _Scratch,
        region: set[str],
        old_recs: Mapping[str, Any],
        last_of: Mapping[int, OrderKey],
        ctx: _Context,
        changes: list[IdentityChange],
    ) -> dict[str, str]:
        """Name the new groups, diff them against the old persons, write the buffers
        and append MAP/MERGE changes. Returns every region identifier's person."""
        first: dict[str, OrderKey] = {k: _order(op.links.get(k)["f"]) for k in region}
        prio = {k: self._prio(k) for k in region}
        old_of: dict[str, str | None] = {k: op.ident.get(k) for k in region}
        known_names = {rec["n"]: o for o, rec in old_recs.items()}
        named: list[tuple[str, str, _Group]] = []
        pid_of: dict[str, str] = {}
        for group in scratch.groups():
            name = min(group.members, key=lambda k: (first[k], prio[k]))
            pid = known_names.get(name) or person_id_for(name)
            named.append((pid, name, group))
            for key in group.members:
                pid_of[key] = pid
        named.sort(key=lambda item: item[0])
        live = {pid for pid, _, _ in named}
        target = {o: pid_of[rec["n"]] for o, rec in old_recs.items() if o not in live}
        absorbed: dict[str, set[str]] = {pid: set() for pid in live}
        for o, rec in old_recs.items():
            dest = o if o in live else target[o]
            absorbed[dest].update(rec["a"])
            if dest != o:
                absorbed[dest].add(o)
        event_set = set(ctx.event_keys)
        for pid, name, group in named:
            ids: dict[str, list[str]] = {}
            for key in sorted(group.members, key=prio.__getitem__):
                type_, _, value = key.partition(":")
                ids.setdefault(type_, []).append(value)
            last = last_of.get(id(group))
            record = {
                "n": name,
                "f": list(first[name]),
                "ids": ids,
                "last": None if last is None else list(last),
                "a": sorted(absorbed[pid] - live)[:MAX_ABSORBED],
            }
            if op.persons.get(pid) != record:
                op.persons.set(pid, record)
            if pid not in old_recs and op.forward.get(pid) is not None:
                op.forward.delete(pid)  # an absorbed person that a re-derivation revived
            if any(old_of[k] != pid for k in group.members):
                self._diff_changes(
                    pid, group, old_of, old_recs, live, target, event_set, ctx, changes
                )
        for o in old_recs:
            if o not in live:
                op.persons.delete(o)
                op.forward.set(o, target[o])
        for key in region:
            if old_of[key] != pid_of[key]:
                op.ident.set(key, pid_of[key])
        return pid_of

    def _diff_changes(
        self,
        pid: str,
        group: _Group,
        old_of: Mapping[str, str | None],
        old_recs: Mapping[str, Any],
        live: set[str],
        target: Mapping[str, str],
        event_set: set[str],
        ctx: _Context,
        changes: list[IdentityChange],
    ) -> None:
        new_keys: list[str] = []
        by_old: dict[str, list[str]] = {}
        for key in group.members:
            old = old_of[key]
            if old is None:
                new_keys.append(key)
            elif old != pid:
                by_old.setdefault(old, []).append(key)
        in_event = sorted((k for k in group.members if k in event_set), key=self._prio)
        top_rule = (
            None
            if not in_event
            else (
                f"deterministic:{_type(in_event[0])}"
                if in_event[0] in ctx.link
                else f"super_node:{_type(in_event[0])}"
            )
        )
        if new_keys:
            changes.append(
                IdentityChange(
                    ChangeKind.MAP,
                    ctx.at,
                    pid,
                    None,
                    tuple(_to_identifier(k) for k in sorted(new_keys, key=self._prio)),
                    top_rule or ctx.move_rule,
                    ctx.event_id,
                )
            )
        olds_in_group = {old_of[k] for k in group.members} - {None}
        rename = not new_keys and len(olds_in_group) == 1
        for old in sorted(by_old):
            keys = tuple(_to_identifier(k) for k in sorted(by_old[old], key=self._prio))
            if old not in live and target[old] == pid:
                direct = any(k in event_set for k in _members(old_recs[old]))
                rule = top_rule if top_rule is not None and direct and not rename else None
                rule = rule or ctx.move_rule
                changes.append(
                    IdentityChange(ChangeKind.MERGE, ctx.at, pid, old, keys, rule, ctx.event_id)
                )
            else:
                changes.append(
                    IdentityChange(
                        ChangeKind.MAP, ctx.at, pid, None, keys, ctx.move_rule, ctx.event_id
                    )
                )

    def _prio(self, key: str) -> tuple[int, str, str]:
        type_, _, value = key.partition(":")
        return (self._rank.get(type_, self._low), type_, value)

    def _person_record(self, op: _Op, pid: str) -> Any:
        record = op.persons.get(pid)
        if record is None:
            raise IdentityError(f"inconsistent identity state: person {pid} has no record")
        return record
