"""The graph's stores, buffered per operation, and the in-memory union-find scratch."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.core.model import Identifier

#: The key, in the ``shapes`` store, of the last version stamped on a change. Shape ids
#: are hex digests, so it cannot collide with one.
VERSION_KEY = "#version"

OrderKey = tuple[int, str]
"""The canonical order of events: ``(at_ms, event_id)``."""


@dataclass
class IdentityStores:
    """The graph's state; pass the worker's state tables (or any ``MutableMapping``) to
    persist it.

    Values are JSON-serialisable plain types and are never mutated in place: every
    change is written back with ``store[key] = value`` (which persistent tables need).
    """

    ident_to_person: MutableMapping[str, str] = field(default_factory=dict)
    persons: MutableMapping[str, Any] = field(default_factory=dict)
    forward: MutableMapping[str, str] = field(default_factory=dict)
    links: MutableMapping[str, Any] = field(default_factory=dict)
    shapes: MutableMapping[str, Any] = field(default_factory=dict)


class _Buffer:
    """A read-through, write-back view of one store for the duration of one operation."""

    __slots__ = ("_cache", "_dirty", "_store")

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self._store = store
        self._cache: dict[str, Any] = {}
        self._dirty: set[str] = set()

    def get(self, key: str) -> Any:
        try:
            return self._cache[key]
        except KeyError:
            value = self._store.get(key)
            self._cache[key] = value
            return value

    def set(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def delete(self, key: str) -> None:
        self.set(key, None)

    def flush(self) -> None:
        for key in self._dirty:
            value = self._cache[key]
            if value is not None:
                self._store[key] = value
            elif key in self._store:
                del self._store[key]
        self._dirty.clear()


class _Op:
    """Buffered access to all stores; flushed with the shapes last, so that an
    operation interrupted half-way is processed again when its event is redelivered."""

    __slots__ = ("forward", "ident", "links", "persons", "shapes")

    def __init__(self, stores: IdentityStores) -> None:
        self.ident = _Buffer(stores.ident_to_person)
        self.persons = _Buffer(stores.persons)
        self.forward = _Buffer(stores.forward)
        self.links = _Buffer(stores.links)
        self.shapes = _Buffer(stores.shapes)

    def flush(self) -> None:
        for buf in (self.links, self.persons, self.ident, self.forward, self.shapes):
            buf.flush()


class _Group:
    __slots__ = ("counts", "members")

    def __init__(self) -> None:
        self.members: list[str] = []
        self.counts: dict[str, int] = {}


class _Scratch:
    """An in-memory union-find over identifier keys, with per-type counts (every type
    is bounded: by its limit or its cap)."""

    __slots__ = ("group_of",)

    def __init__(self) -> None:
        self.group_of: dict[str, _Group] = {}

    def add(self, keys: Iterable[str]) -> _Group:
        group = _Group()
        counts = group.counts
        for key in keys:
            group.members.append(key)
            self.group_of[key] = group
            type_ = _type(key)
            counts[type_] = counts.get(type_, 0) + 1
        return group

    def get(self, key: str) -> _Group:
        group = self.group_of.get(key)
        return self.add((key,)) if group is None else group

    def union(self, a: _Group, b: _Group) -> _Group:
        if len(a.members) < len(b.members):
            a, b = b, a
        for key in b.members:
            a.members.append(key)
            self.group_of[key] = a
        for type_, count in b.counts.items():
            a.counts[type_] = a.counts.get(type_, 0) + count
        return a

    def groups(self) -> list[_Group]:
        seen: dict[int, _Group] = {}
        for group in self.group_of.values():
            seen.setdefault(id(group), group)
        return list(seen.values())


@dataclass
class _Refusal:
    rep: str  # one of the event's identifiers in the refused group
    rule: str
    keys: list[str]


@dataclass
class _Context:
    """What one operation is about: the event (if any) and how to label moves."""

    at: datetime
    event_id: str | None
    event_keys: list[str]  # the event's usable identifiers, priority order
    link: list[str]  # the event's linkable identifiers (usable minus super nodes)
    move_rule: str  # the rule of moves that the event does not explain by itself
    acc_rep: str | None = None
    refusals: list[_Refusal] = field(default_factory=list)


def _type(key: str) -> str:
    return key.partition(":")[0]


def _order(value: Sequence[Any]) -> OrderKey:
    return (int(value[0]), str(value[1]))


def _shape_id(keys: Iterable[str]) -> str:
    """The id of an identifier set: a hash of the repr of its sorted keys (unambiguous)."""
    payload = repr(sorted(keys)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _members(record: Mapping[str, Any]) -> list[str]:
    return [f"{t}:{v}" for t, values in record["ids"].items() for v in values]


def _to_identifier(key: str) -> Identifier:
    type_, _, value = key.partition(":")
    return Identifier(type_, value)


def _refile(rec: Any, shape_id: str) -> dict[str, Any] | None:
    """A copy of a links record with ``shape_id`` moved from its links to its other shapes."""
    if rec is None or shape_id not in rec["e"]:
        return None
    others = list(rec["o"])
    if shape_id not in others:
        bisect.insort(others, shape_id)
    return {**rec, "e": [x for x in rec["e"] if x != shape_id], "o": others}


def _bump(last_of: dict[int, OrderKey], group: _Group, key: OrderKey) -> None:
    prev = last_of.get(id(group))
    if prev is None or key > prev:
        last_of[id(group)] = key
