"""Identity rules: priority, per-person limits, super-node guard and blocklist."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.model import IDENTIFIER_TYPES
from pipeline.core.pii import sha256_hex

#: Namespace of person ids: ``uuid5(PERSON_NAMESPACE, "type:value")`` of the first identifier.
PERSON_NAMESPACE = uuid.UUID("fb9bac7d-0c03-45a2-9f8a-5dca38361a2e")

DEFAULT_LIMITS: Mapping[str, int] = {
    "user_id": 1,
    "email_sha256": 3,
    "phone_sha256": 3,
    "loyalty_id": 2,
}
DEFAULT_SUPER_NODE_TYPES: tuple[str, ...] = ("device_id", "anonymous_id")
#: Per-person caps of the types without a limit: they bound state, not identity (a
#: person past them is a bot or a shared account, not a customer).
DEFAULT_CAPS: Mapping[str, int] = {"anonymous_id": 1_000, "device_id": 100}

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
        "caps",
        "default_cap",
        "max_link_sets",
        "max_identifiers_per_event",
        "max_value_length",
        "max_person_identifiers",
    }
)
_BOUNDS = (
    "default_cap",
    "max_person_identifiers",
    "max_link_sets",
    "max_identifiers_per_event",
    "max_value_length",
)


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
    * ``caps`` / ``default_cap``: most distinct identifiers of a type without a limit
      that one person may hold (``caps`` per type, ``default_cap`` for the rest). A
      merge past one is refused like a limit, with rule ``cap:<type>``; caps keep
      person records, changes and merges bounded whatever the input.
    * ``max_person_identifiers``: most identifiers of all types one person may hold
      (rule ``cap:identifiers``); with ``max_value_length`` it keeps a person record
      and a ``MERGE`` well under the producer's 1 MB message limit.
    * ``max_link_sets``: most distinct identifier sets one identifier links. A guarded
      type past it is a super node; another type keeps linking, but its component is
      no longer re-derived when events arrive late.
    * ``max_identifiers_per_event`` / ``max_value_length``: an event's identifiers past
      the first (by priority), and values longer than this many characters, are refused
      (rules ``cap:identifiers_per_event``, ``cap:value_length``).
    """

    priority: tuple[str, ...] = IDENTIFIER_TYPES
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    super_node_threshold: int = 3
    super_node_types: tuple[str, ...] = DEFAULT_SUPER_NODE_TYPES
    blocklist: frozenset[str] = DEFAULT_BLOCKLIST
    max_replay_identifiers: int = 20_000
    caps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    default_cap: int = 100
    max_person_identifiers: int = 1_500
    max_link_sets: int = 1_000
    max_identifiers_per_event: int = 50
    max_value_length: int = 256

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
        caps: dict[str, int] = {}
        for type_, cap_ in dict(self.caps).items():
            _check_type(type_, "caps")
            caps[type_] = _positive(cap_, f"caps.{type_}")
        for name in _BOUNDS:
            _positive(getattr(self, name), name)
        blocklist = frozenset(_clean(str(v)) for v in self.blocklist)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "limits", limits)
        object.__setattr__(self, "caps", caps)
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

    def bound(self, type_: str) -> int:
        """The most identifiers of a type one person may hold: its limit, else its cap."""
        limit = self.limits.get(type_)
        if limit is not None:
            return limit
        return self.caps.get(type_, self.default_cap)

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
        ``max_replay_identifiers``, ``caps`` (mapping merged over the defaults),
        ``default_cap``, ``max_person_identifiers``, ``max_link_sets``,
        ``max_identifiers_per_event`` and ``max_value_length``. Unknown keys are an error.
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
        if "caps" in data:
            raw_caps = data["caps"]
            if not isinstance(raw_caps, Mapping):
                raise IdentityError("caps: expected a mapping of type to cap")
            kwargs["caps"] = {**DEFAULT_CAPS, **{str(t): c for t, c in raw_caps.items()}}
        for name in _BOUNDS:
            if name in data:
                kwargs[name] = data[name]
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
            "caps": dict(self.caps),
            **{name: getattr(self, name) for name in _BOUNDS},
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


def _positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IdentityError(f"{where}: must be an integer >= 1")
    return value
