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

from pipeline.core.identity.changes import ChangeKind, IdentityChange, Resolution
from pipeline.core.identity.evaluation import pairwise_precision_recall
from pipeline.core.identity.graph import IdentityGraph
from pipeline.core.identity.rules import (
    DEFAULT_BLOCKLIST,
    DEFAULT_CAPS,
    DEFAULT_LIMITS,
    DEFAULT_SUPER_NODE_TYPES,
    PERSON_NAMESPACE,
    IdentityError,
    IdentityRules,
    person_id_for,
)
from pipeline.core.identity.state import IdentityStores

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_CAPS",
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
