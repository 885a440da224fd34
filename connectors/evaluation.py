"""Identity stitching quality on a generated folder (``journeys evaluate DIR``).

Reads every source file of a folder written by ``journeys generate`` through the real
connectors (:func:`connectors.replay.replay_files`, the code ``journeys replay`` runs,
with no broker), resolves the touchpoints' identifiers in event-time order
``(occurred_at, event_id)`` with :class:`pipeline.core.identity.IdentityGraph` as the
identity stage would (the read-only fast path ``lookup()`` first, the owner's
``resolve()`` when it misses), and scores the stitched persons against the folder's
ground truth with :func:`pipeline.core.identity.pairwise_precision_recall`:

* identifiers: ``ground_truth.csv`` (``identifier_type,identifier_value,person``),
  restricted to the identifiers that some touchpoint carries (one that only occurs in
  a dead letter never reaches the graph; they are counted apart);
* events (when ``events_truth.csv`` is there): the final person of every touchpoint
  against the true owner of its ``(source, source_event_id)``.

The *recall ceiling* is the recall of an oracle that links every pair of identifiers
of the same true owner that occur in one event: what deterministic stitching could
reach on this data. Recall below it is the rules' doing; above 1 - ceiling is the
data's (identifiers that no event links).

Nothing here prints, reads the environment or needs a broker or ClickHouse.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import ConnectorError, Rejected
from connectors.registry import SOURCES
from connectors.replay import file_format, replay_files
from pipeline.core.identity import (
    ChangeKind,
    IdentityError,
    IdentityGraph,
    IdentityRules,
    pairwise_precision_recall,
)
from pipeline.core.model import Touchpoint, to_millis

__all__ = ["Evaluation", "EvaluationError", "evaluate", "source_files"]

GROUND_TRUTH = "ground_truth.csv"
EVENTS_TRUTH = "events_truth.csv"


class EvaluationError(ValueError):
    """The folder cannot be evaluated (no source file, no or bad ground truth)."""


@dataclass
class Evaluation:
    """What :func:`evaluate` measured. ``as_dict()`` is the JSON of ``--format json``."""

    folder: str
    files: dict[str, int] = field(default_factory=dict)  # file name -> records
    records: int = 0
    touchpoints: int = 0
    dead_letters: int = 0
    #: touchpoints that carry no identifier at all (not resolved, not scored)
    without_identifiers: int = 0
    #: identifiers in ground truth / of those, carried by some touchpoint (scored)
    truth_identifiers: int = 0
    scored_identifiers: int = 0
    precision: float = 1.0
    recall: float = 1.0
    recall_ceiling: float = 1.0
    #: distinct true owners, and distinct stitched persons, of the scored identifiers
    persons_true: int = 0
    persons_stitched: int = 0
    #: event level (None without events_truth.csv)
    scored_events: int = 0
    event_precision: float | None = None
    event_recall: float | None = None
    #: REFUSED changes by rule (limit:<type>, blocklist, super_node:<type>)
    refusals: dict[str, int] = field(default_factory=dict)
    #: resolver: events answered by lookup() / sent to resolve(), and resolve()'s time
    fast_path: int = 0
    owner_calls: int = 0
    owner_seconds: float = 0.0
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def links_per_second(self) -> float:
        """``resolve()`` calls per second of ``resolve()`` time (the owner's rate)."""
        return self.owner_calls / self.owner_seconds if self.owner_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["links_per_second"] = round(self.links_per_second, 1)
        out["owner_seconds"] = round(self.owner_seconds, 4)
        return out


def source_files(folder: Path) -> list[tuple[str, Path]]:
    """``(source, file)`` for every file of *folder* named after a source
    (``segment.jsonl``, ``pos.csv``, ``ads.csv.gz``, ...), in source order."""
    out: list[tuple[str, Path]] = []
    for name, source in SOURCES.items():
        for path in sorted(folder.glob(f"{name}.*")):
            try:
                fmt = file_format(path)
            except ConnectorError:
                continue
            if path.is_file() and fmt in source.formats:
                out.append((name, path))
    return out


def _read_csv(path: Path, columns: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}")
            for row in reader:
                values = [row.get(c) for c in columns]
                if any(not v for v in values):
                    raise EvaluationError(f"{path}:{reader.line_num}: empty or missing field")
                yield reader.line_num, row
    except OSError as exc:
        raise EvaluationError(f"{path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: not a readable CSV file") from exc


def read_ground_truth(path: Path) -> dict[str, str]:
    """``"type:value" -> owner`` from a ``ground_truth.csv``."""
    columns = ("identifier_type", "identifier_value", "person")
    return {
        f"{row['identifier_type']}:{row['identifier_value']}": row["person"]
        for _line, row in _read_csv(path, columns)
    }


def read_events_truth(path: Path) -> dict[tuple[str, str], str]:
    """``(source, source_event_id) -> owner`` from an ``events_truth.csv``."""
    columns = ("source", "source_event_id", "person")
    return {
        (row["source"], row["source_event_id"]): row["person"]
        for _line, row in _read_csv(path, columns)
    }


def _keys(tp: Touchpoint) -> list[str]:
    return [f"{i.type}:{i.value}" for i in tp.identifiers]


def _oracle(touchpoints: Iterable[Touchpoint], truth: Mapping[str, str]) -> dict[str, str]:
    """Link every two identifiers of the same true owner that occur in one event."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = key
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(key, key) != root:
            parent[key], key = root, parent[key]
        return root

    for tp in touchpoints:
        by_owner: dict[str, str] = {}
        for key in _keys(tp):
            owner = truth.get(key)
            if owner is None:
                continue
            first = by_owner.setdefault(owner, key)
            a, b = find(first), find(key)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {key: find(key) for key in truth}


def evaluate(folder: Path, rules: IdentityRules | None = None) -> Evaluation:
    """Replay *folder*'s source files through the connectors, stitch and score them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    truth_path = folder / GROUND_TRUTH
    if not truth_path.is_file():
        raise EvaluationError(f"{folder}: no {GROUND_TRUTH} (write one with journeys generate)")
    files = source_files(folder)
    if not files:
        raise EvaluationError(
            f"{folder}: no source file (expected e.g. segment.jsonl, pos.csv, ads.csv)"
        )
    truth = read_ground_truth(truth_path)
    events_path = folder / EVENTS_TRUTH
    events_truth = read_events_truth(events_path) if events_path.is_file() else None

    result = Evaluation(folder=str(folder), truth_identifiers=len(truth))
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejected] = []
    for name, path in files:
        try:
            stats = replay_files([path], SOURCES[name], touchpoints.append, rejected.append)
        except (ConnectorError, OSError) as exc:
            raise EvaluationError(f"{path}: {exc}") from exc
        result.files[path.name] = stats.records
        result.records += stats.records
    result.touchpoints = len(touchpoints)
    result.dead_letters = len(rejected)

    graph = IdentityGraph(rules)
    result.rules = {k: v for k, v in graph.rules.to_mapping().items() if k != "blocklist"}
    result.rules["blocklist_size"] = len(graph.rules.blocklist)
    ordered = sorted(
        ((to_millis(tp.occurred_at), tp.event_id, tp) for tp in touchpoints),
        key=lambda item: (item[0], item[1]),
    )
    refusals: Counter[str] = Counter()
    owner_seconds = 0.0
    try:
        for at_ms, event_id, tp in ordered:
            if not tp.identifiers:
                result.without_identifiers += 1
                continue
            if graph.lookup(tp.identifiers, at_ms) is not None:
                result.fast_path += 1
                continue
            began = time.perf_counter()
            resolution = graph.resolve(tp.identifiers, event_id, at_ms)
            owner_seconds += time.perf_counter() - began
            result.owner_calls += 1
            for change in resolution.changes:
                if change.kind is ChangeKind.REFUSED and change.rule:
                    refusals[change.rule] += 1
    except IdentityError as exc:
        raise EvaluationError(f"identity graph: {exc}") from exc
    result.owner_seconds = owner_seconds
    result.refusals = dict(sorted(refusals.items()))

    seen = {key for tp in touchpoints for key in _keys(tp)}
    scored = {key: owner for key, owner in truth.items() if key in seen}
    result.scored_identifiers = len(scored)
    predicted = graph.partition()
    result.precision, result.recall = pairwise_precision_recall(predicted, scored)
    result.recall_ceiling = pairwise_precision_recall(_oracle(touchpoints, scored), scored)[1]
    result.persons_true = len(set(scored.values()))
    result.persons_stitched = len({predicted.get(key, f"solo:{key}") for key in scored})

    if events_truth is not None:
        stitched: dict[str, str] = {}
        owners: dict[str, str] = {}
        for at_ms, event_id, tp in ordered:
            owner = events_truth.get((tp.source, tp.source_event_id or ""))
            if owner is None:
                continue
            owners[event_id] = owner
            if tp.identifiers:  # resolving again is idempotent: the event's final person
                stitched[event_id] = graph.resolve(tp.identifiers, event_id, at_ms).person_id
        result.scored_events = len(owners)
        result.event_precision, result.event_recall = pairwise_precision_recall(stitched, owners)
    return result
