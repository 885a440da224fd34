"""Identity changes: what :meth:`IdentityGraph.resolve` and ``forget`` publish."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pipeline.core.identity.rules import IdentityError
from pipeline.core.model import Identifier, from_millis


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

    ``version`` is the processing-order version the graph stamps on every change it
    publishes (a sequence in its state; None only before it is stamped).
    """

    kind: ChangeKind
    at: datetime
    person_id: str
    absorbed_person_id: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    rule: str | None = None
    event_id: str | None = None
    version: int | None = None

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
            "version": self.version,
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
                version=None if rec.get("version") is None else int(rec["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IdentityError(f"IdentityChange record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Resolution:
    """The person of one event and the graph changes the event caused."""

    person_id: str
    changes: list[IdentityChange] = field(default_factory=list)
