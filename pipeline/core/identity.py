"""Identity stitching: a deterministic, order-independent identity graph.

Every touchpoint carries typed identifiers (``anonymous_id``, ``device_id``,
``user_id``, ``email_sha256``, ``phone_sha256``, ``loyalty_id`` or any other type).
The graph groups identifiers into *persons* with union-find, under four rules
(:class:`IdentityRules`):

Priority
    ``user_id > email_sha256 > phone_sha256 > loyalty_id > device_id > anonymous_id``;
    unknown types rank below all of them (then by type name). Within an event the
    identifiers are taken in priority order: the person of the highest-priority
    identifier is the event's *anchor*, and the other persons and new identifiers
    are merged into it one by one.

Limits
    At most ``limits[type]`` distinct identifiers of a type per person (defaults:
    1 ``user_id``, 3 ``email_sha256``, 3 ``phone_sha256``, 2 ``loyalty_id``; every
    other type is unlimited). A merge that would break a limit is refused (a
    ``REFUSED`` change with rule ``limit:<type>``); the refused person (or new
    identifier, which then gets a person of its own) stays apart, and the event's
    other identifiers still join the anchor when they fit.

Blocklist
    Junk values ("null", "undefined", "0", the SHA-256 of "" and of test e-mails,
    ...) compared case-insensitively on the stripped raw value. They never link or
    map anything; an event that carries any gets one ``REFUSED`` change with rule
    ``blocklist``. An event whose identifiers are all junk gets an *ephemeral*
    person, ``uuid5(PERSON_NAMESPACE, "event:<event_id>")``, that is not stored.

Super nodes
    An identifier of a guarded type (``super_node_types``: ``device_id`` and
    ``anonymous_id`` by default) that has appeared in events together with more
    than ``super_node_threshold`` distinct values of one limited type (e.g. a kiosk
    that has seen 4 user ids) is a super node: it is cut out of every link, past
    and future, and keeps a person of its own. Events that carry it record a
    ``REFUSED`` change with rule ``super_node:<type>``.

Order independence
    The graph is defined as a function of the *set* of events it has resolved: it
    equals processing the events' distinct identifier sets in event-time order,
    ``(at_ms, event_id)``, with the rules above (and super nodes, which are a
    monotone function of the set, cut from the start). An event that arrives later
    than events it is linked to re-derives its connected component in that order
    (changes with rule ``reorder``), so any arrival order of the same events gives
    the same persons *and the same person ids*.

Person ids
    ``uuid5(PERSON_NAMESPACE, "<type>:<value>")`` of the person's *first* identifier:
    the one with the smallest ``(first event time, event id, priority, type, value)``.
    When persons merge the older one therefore survives (its first identifier is
    the union's first identifier), and the absorbed id is forwarded to it:
    :meth:`IdentityGraph.canonical` follows forwards with path compression.

State lives in five injected ``MutableMapping[str, ...]`` stores (plain dicts by
default, the worker's rocksdict state tables) whose values are JSON-serialisable:

* ``ident_to_person["type:value"] = person_id`` (always the live person),
* ``persons[person_id] = {"n": first identifier, "f": [at_ms, event_id] of it,
  "ids": {type: [values]}, "last": [at_ms, event_id] of the newest link that
  touches the person or None, "a": [absorbed person ids]}``,
* ``forward[absorbed_person_id] = survivor_person_id``,
* ``links["type:value"] = {"f": first [at_ms, event_id], "e": [shape ids that link
  it to others], "o": [other shape ids], "co": {type: [values]} (co-occurring
  limited values, guarded types only), "s": is a super node}``,
* ``shapes[shape_id] = [at_ms, event_id, [linked identifier keys]]``: one entry per
  distinct identifier set ever seen (with its earliest event), keyed by a hash of
  the set. Shapes and links are the source of truth; persons and
  ``ident_to_person`` are derived from them.

This module imports no Faust, Kafka or ClickHouse and never reads the environment.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pipeline.core.model import IDENTIFIER_TYPES, Identifier, from_millis
from pipeline.core.pii import sha256_hex

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_LIMITS",
    "DEFAULT_SUPER_NODE_TYPES",
    "PERSON_NAMESPACE",
    "ChangeKind",
    "IdentityChange",
    "IdentityError",
    "IdentityGraph",
    "IdentityRules",
    "IdentityStores",
    "Resolution",
    "pairwise_precision_recall",
    "person_id_for",
]

#: Namespace of person ids: ``uuid5(PERSON_NAMESPACE, "type:value")`` of the first identifier.
PERSON_NAMESPACE = uuid.UUID("fb9bac7d-0c03-45a2-9f8a-5dca38361a2e")

DEFAULT_LIMITS: Mapping[str, int] = {
    "user_id": 1,
    "email_sha256": 3,
    "phone_sha256": 3,
    "loyalty_id": 2,
}
DEFAULT_SUPER_NODE_TYPES: tuple[str, ...] = ("device_id", "anonymous_id")

_JUNK_VALUES = (
    "",
    "null",
    "none",
    "nil",
    "nan",
    "undefined",
    "[object object]",
    "0",
    "-1",
    "anonymous",
    "unknown",
    "guest",
    "n/a",
    "test",
    "00000000-0000-0000-0000-000000000000",  # zeroed IDFA/GAID when tracking is off
)
_JUNK_EMAILS = (
    "",
    "test@test.com",
    "test@example.com",
    "a@a.com",
    "noreply@example.com",
    "no-reply@example.com",
    "example@example.com",
    "email@example.com",
    "user@example.com",
    "test@gmail.com",
    "null@null.com",
)
_JUNK_PHONES = ("+10000000000", "+11111111111", "+11234567890", "+15555555555")

#: Junk values, compared with ``value.strip().casefold()``.
DEFAULT_BLOCKLIST: frozenset[str] = frozenset(
    [*_JUNK_VALUES, *(sha256_hex(e) for e in _JUNK_EMAILS), *(sha256_hex(p) for p in _JUNK_PHONES)]
)

_UNLIMITED = "unlimited"
_RULE_KEYS = frozenset(
    {
        "priority",
        "limits",
        "super_node_threshold",
        "super_node_types",
        "blocklist",
        "blocklist_extra",
        "max_replay_identifiers",
    }
)

OrderKey = tuple[int, str]
"""The canonical order of events: ``(at_ms, event_id)``."""


class IdentityError(Exception):
    """Invalid identity rules, input or state."""


def person_id_for(identifier_key: str) -> str:
    """The person id named by an identifier key ``"type:value"``."""
    return str(uuid.uuid5(PERSON_NAMESPACE, identifier_key))


def _ephemeral_person(event_id: str) -> str:
    return str(uuid.uuid5(PERSON_NAMESPACE, f"event:{event_id}"))


def _check_type(type_: object, where: str) -> str:
    if not isinstance(type_, str) or not type_ or ":" in type_:
        raise IdentityError(f"{where}: identifier type must be a non-empty string without ':'")
    return type_


def _clean(value: str) -> str:
    return value.strip().casefold()


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class IdentityRules:
    """The stitching rules. Build them in code or from a config mapping (:meth:`from_mapping`).

    * ``priority``: identifier types, strongest first. Unknown types rank last.
    * ``limits``: most distinct identifiers of a type one person may hold; types
      without an entry are unlimited.
    * ``super_node_threshold`` / ``super_node_types``: an identifier of a guarded
      type seen with more than the threshold of distinct values of one limited type
      is a super node and never links anything.
    * ``blocklist``: junk values (compared stripped and case-folded), any type.
    * ``max_replay_identifiers``: the largest component re-derived in event-time
      order when an event arrives late; a larger one is updated greedily in arrival
      order instead (and loses the order-independence guarantee).
    """

    priority: tuple[str, ...] = IDENTIFIER_TYPES
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    super_node_threshold: int = 3
    super_node_types: tuple[str, ...] = DEFAULT_SUPER_NODE_TYPES
    blocklist: frozenset[str] = DEFAULT_BLOCKLIST
    max_replay_identifiers: int = 20_000

    def __post_init__(self) -> None:
        priority = tuple(_check_type(t, "priority") for t in self.priority)
        if len(set(priority)) != len(priority):
            raise IdentityError("priority: a type is listed twice")
        limits: dict[str, int] = {}
        for type_, limit in dict(self.limits).items():
            _check_type(type_, "limits")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise IdentityError(f"limits.{type_}: must be an integer >= 1")
            limits[type_] = limit
        threshold = self.super_node_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise IdentityError("super_node_threshold: must be an integer >= 1")
        guarded = tuple(_check_type(t, "super_node_types") for t in self.super_node_types)
        cap = self.max_replay_identifiers
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise IdentityError("max_replay_identifiers: must be an integer >= 1")
        blocklist = frozenset(_clean(str(v)) for v in self.blocklist)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "limits", limits)
        object.__setattr__(self, "super_node_types", guarded)
        object.__setattr__(self, "blocklist", blocklist)

    def rank(self, type_: str) -> int:
        """0 for the strongest type; every unknown type gets ``len(priority)``."""
        try:
            return self.priority.index(type_)
        except ValueError:
            return len(self.priority)

    def limit(self, type_: str) -> int | None:
        """The per-person limit of a type, or None when it is unlimited."""
        return self.limits.get(type_)

    def is_blocked(self, value: str) -> bool:
        """Whether a raw identifier value is junk."""
        return _clean(value) in self.blocklist

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> IdentityRules:
        """Rules from a parsed config file (YAML, TOML or JSON).

        Keys: ``priority`` (list, replaces the default), ``limits`` (mapping merged
        over the defaults; a value of ``null`` or ``"unlimited"`` removes a limit),
        ``super_node_threshold``, ``super_node_types`` (list), ``blocklist`` (list,
        replaces the defaults), ``blocklist_extra`` (list, added to the blocklist)
        and ``max_replay_identifiers``. Unknown keys are an error.
        """
        if not isinstance(data, Mapping):
            raise IdentityError("identity rules: expected a mapping")
        unknown = sorted(str(k) for k in data if k not in _RULE_KEYS)
        if unknown:
            raise IdentityError(f"identity rules: unknown key(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        if "priority" in data:
            kwargs["priority"] = tuple(_str_list(data["priority"], "priority"))
        if "limits" in data:
            raw = data["limits"]
            if not isinstance(raw, Mapping):
                raise IdentityError("limits: expected a mapping of type to limit")
            limits = dict(DEFAULT_LIMITS)
            for type_, limit in raw.items():
                if limit is None or (isinstance(limit, str) and limit.lower() == _UNLIMITED):
                    limits.pop(str(type_), None)
                else:
                    limits[str(type_)] = limit
            kwargs["limits"] = limits
        if "super_node_threshold" in data:
            kwargs["super_node_threshold"] = data["super_node_threshold"]
        if "super_node_types" in data:
            kwargs["super_node_types"] = tuple(
                _str_list(data["super_node_types"], "super_node_types")
            )
        blocklist = set(DEFAULT_BLOCKLIST)
        if "blocklist" in data:
            blocklist = set(_str_list(data["blocklist"], "blocklist"))
        if "blocklist_extra" in data:
            blocklist.update(_str_list(data["blocklist_extra"], "blocklist_extra"))
        kwargs["blocklist"] = frozenset(blocklist)
        if "max_replay_identifiers" in data:
            kwargs["max_replay_identifiers"] = data["max_replay_identifiers"]
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, Any]:
        """The rules as a plain mapping that :meth:`from_mapping` reads back."""
        limits: dict[str, int | str] = dict(self.limits)
        for type_ in DEFAULT_LIMITS:
            limits.setdefault(type_, _UNLIMITED)
        return {
            "priority": list(self.priority),
            "limits": limits,
            "super_node_threshold": self.super_node_threshold,
            "super_node_types": list(self.super_node_types),
            "blocklist": sorted(self.blocklist),
            "max_replay_identifiers": self.max_replay_identifiers,
        }


def _str_list(value: object, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence | frozenset | set):
        raise IdentityError(f"{where}: expected a list of strings")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise IdentityError(f"{where}: expected a list of strings, got {item!r}")
        out.append(item)
    return out


# --------------------------------------------------------------------------- changes


class ChangeKind(StrEnum):
    """The kinds of ``schemas/IdentityChange.avsc``."""

    MAP = "MAP"
    MERGE = "MERGE"
    REFUSED = "REFUSED"
    FORGET = "FORGET"


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """One change of the graph, mirroring ``schemas/IdentityChange.avsc``.

    * ``MAP``: ``identifiers`` now belong to ``person_id`` (new identifiers, or
      identifiers moved by a ``reorder`` / ``super_node:<type>`` / ``forget``).
    * ``MERGE``: ``absorbed_person_id`` was absorbed into ``person_id`` (the older
      one); ``identifiers`` are the absorbed person's identifiers that moved.
    * ``REFUSED``: a link the rules refused; ``rule`` says why (``limit:<type>``,
      ``blocklist``, ``super_node:<type>``), ``absorbed_person_id`` is the person
      the event could not be merged with, when there is one.
    * ``FORGET``: ``person_id`` and its ``identifiers`` were erased.
    """

    kind: ChangeKind
    at: datetime
    person_id: str
    absorbed_person_id: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    rule: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise IdentityError("IdentityChange.at: a timezone-aware datetime is required")

    def to_record(self) -> dict[str, Any]:
        """The Avro record (``schemas/IdentityChange.avsc``)."""
        return {
            "kind": self.kind.value,
            "at": self.at.astimezone(UTC),
            "person_id": self.person_id,
            "absorbed_person_id": self.absorbed_person_id,
            "identifiers": [{"type": i.type, "value": i.value} for i in self.identifiers],
            "rule": self.rule,
            "event_id": self.event_id,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> IdentityChange:
        """Build a change from a decoded Avro record."""
        try:
            at = rec["at"]
            when = at.astimezone(UTC) if isinstance(at, datetime) else from_millis(int(at))
            return cls(
                kind=ChangeKind(rec["kind"]),
                at=when,
                person_id=rec["person_id"],
                absorbed_person_id=rec.get("absorbed_person_id"),
                identifiers=tuple(
                    Identifier(i["type"], i["value"]) for i in rec.get("identifiers") or ()
                ),
                rule=rec.get("rule"),
                event_id=rec.get("event_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IdentityError(f"IdentityChange record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Resolution:
    """The person of one event and the graph changes the event caused."""

    person_id: str
    changes: list[IdentityChange] = field(default_factory=list)


# --------------------------------------------------------------------------- stores


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


# --------------------------------------------------------------------------- scratch


class _Group:
    __slots__ = ("counts", "members")

    def __init__(self) -> None:
        self.members: list[str] = []
        self.counts: dict[str, int] = {}


class _Scratch:
    """An in-memory union-find over identifier keys, with per-type counts of limited types."""

    __slots__ = ("group_of", "limits")

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = limits
        self.group_of: dict[str, _Group] = {}

    def add(self, keys: Iterable[str]) -> _Group:
        group = _Group()
        for key in keys:
            group.members.append(key)
            self.group_of[key] = group
            type_ = _type(key)
            if type_ in self.limits:
                group.counts[type_] = group.counts.get(type_, 0) + 1
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


# --------------------------------------------------------------------------- graph


class IdentityGraph:
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
        usable, junk = self._normalise(identifiers)
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
            op.flush()
            person = _ephemeral_person(event_id)
            changes.append(self._blocklist_change(at, person, junk, event_id))
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
        if region_info is not None:
            region, shapes, persons = region_info
            old_recs = {p: self._person_record(op, p) for p in sorted(persons)}
            scratch, last_of = self._rederive(region, shapes, ctx, others)
        else:
            scratch, last_of, region = self._incremental(op, old_recs, usable, flipped, order, ctx)
        pid_of = self._commit(op, scratch, region, old_recs, last_of, ctx, changes)
        person = pid_of[ctx.link[0]] if ctx.link else pid_of[usable[0]]
        if junk:
            changes.insert(0, self._blocklist_change(at, person, junk, event_id))
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
            if any(len(vs) > self._threshold for vs in co.values()):
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
                linked = list(rec["e"]) if rec is not None else []
                other_shapes = list(rec["o"]) if rec is not None else []
                bucket = linked if multi else other_shapes
                pos = bisect.bisect_left(bucket, sid)
                if pos == len(bucket) or bucket[pos] != sid:
                    bucket.insert(pos, sid)
                co = co_of.get(key, {})
                new = {"f": list(first), "e": linked, "o": other_shapes, "co": co, "s": False}
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
        scratch = _Scratch(self._limits)
        flipped_set = set(flipped)
        last_of: dict[int, OrderKey] = {}
        for record in old_recs.values():
            keys = [k for k in _members(record) if k not in flipped_set]
            if not keys:
                continue
            group = scratch.add(keys)
            if record["last"] is not None:
                _bump(last_of, group, _order(record["last"]))
        for key in usable:
            if key not in ctx.link and key not in scratch.group_of:
                scratch.add((key,))
        if ctx.link:
            self._step(scratch, ctx.link, ctx)
            if len(ctx.link) >= 2:
                for key in ctx.link:
                    _bump(last_of, scratch.group_of[key], order)
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
                refusals.append(_Refusal(keys[0], f"limit:{broken}", keys))
        if ctx is not None:
            ctx.acc_rep = link[0]
            ctx.refusals = refusals
        elif others is not None:
            others.extend((link[0], refusal) for refusal in refusals)

    def _violation(self, a: _Group, b: _Group) -> str | None:
        worst: tuple[int, str] | None = None
        for type_, count in b.counts.items():
            if a.counts.get(type_, 0) + count > self._limits[type_]:
                cand = (self._rank.get(type_, self._low), type_)
                if worst is None or cand < worst:
                    worst = cand
        return None if worst is None else worst[1]

    def _region(
        self, op: _Op, seeds: Iterable[str]
    ) -> tuple[set[str], dict[str, Any], set[str]] | None:
        """The connected component(s) of ``seeds``: identifiers reachable through
        linking shapes (not through super nodes) and through current persons.

        None when it is larger than ``max_replay_identifiers``.
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
            for shape_id in rec["e"]:
                if shape_id in shapes:
                    continue
                shape = op.shapes.get(shape_id)
                if shape is None:
                    continue
                shapes[shape_id] = shape
                stack.extend(x for x in shape[2] if x not in region)
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
        scratch = _Scratch(self._limits)
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
                "a": sorted(absorbed[pid] - live),
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
        op.flush()
        identifiers = [_to_identifier(k) for k in sorted(gone, key=self._prio)]
        out.append(
            IdentityChange(ChangeKind.FORGET, at, pid, None, tuple(identifiers), "forget", None)
        )
        if changes is not None:
            changes.extend(out)
        return identifiers

    # ------------------------------------------------------------------ helpers

    def _prio(self, key: str) -> tuple[int, str, str]:
        type_, _, value = key.partition(":")
        return (self._rank.get(type_, self._low), type_, value)

    def _normalise(self, identifiers: Iterable[Identifier]) -> tuple[list[str], list[str]]:
        """Usable identifier keys (deduplicated, priority order) and junk keys (sorted)."""
        usable: dict[str, tuple[int, str, str]] = {}
        junk: set[str] = set()
        for ident in identifiers:
            if not isinstance(ident, Identifier):
                raise IdentityError(f"identifiers: expected Identifier, got {type(ident).__name__}")
            type_ = _check_type(ident.type, "identifiers")
            value = ident.value
            if not isinstance(value, str):
                raise IdentityError(f"identifiers: the value of a {type_} must be a string")
            key = f"{type_}:{value}"
            if _clean(value) in self._blocked:
                junk.add(key)
            else:
                usable[key] = (self._rank.get(type_, self._low), type_, value)
        return sorted(usable, key=usable.__getitem__), sorted(junk)

    def _person_record(self, op: _Op, pid: str) -> Any:
        record = op.persons.get(pid)
        if record is None:
            raise IdentityError(f"inconsistent identity state: person {pid} has no record")
        return record

    def _event_person(self, op: _Op, link: list[str], usable: list[str], event_id: str) -> str:
        if not usable:
            return _ephemeral_person(event_id)
        key = link[0] if link else usable[0]
        pid = op.ident.get(key)
        if pid is None:
            raise IdentityError(f"inconsistent identity state: {_type(key)} has no person")
        return str(pid)

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


# --------------------------------------------------------------------------- evaluation


def pairwise_precision_recall(
    predicted: Mapping[str, str], truth: Mapping[str, str]
) -> tuple[float, float]:
    """Pairwise precision and recall of an identifier -> person partition.

    A pair of identifiers is positive when both are in the same person. Only the
    identifiers in ``truth`` count; one missing from ``predicted`` is a person of
    its own there. With no positive pair on a side, that side's score is 1.0.
    Linear time: pairs are counted from cluster sizes (a contingency table).
    """
    pred_sizes: Counter[tuple[str, str]] = Counter()
    true_sizes: Counter[str] = Counter()
    both: Counter[tuple[tuple[str, str], str]] = Counter()
    for ident, true_person in truth.items():
        person = predicted.get(ident)
        cluster = ("p", person) if person is not None else ("solo", ident)
        pred_sizes[cluster] += 1
        true_sizes[true_person] += 1
        both[(cluster, true_person)] += 1

    def pairs(sizes: Iterable[int]) -> int:
        return sum(n * (n - 1) // 2 for n in sizes)

    true_pos = pairs(both.values())
    pred_pos = pairs(pred_sizes.values())
    real_pos = pairs(true_sizes.values())
    precision = true_pos / pred_pos if pred_pos else 1.0
    recall = true_pos / real_pos if real_pos else 1.0
    return precision, recall
