"""The batch engine's state and checkpoint records: state tables, markers, fences.

:class:`StateTable` is a step's key-value state (rocksdict stores, writes kept in
memory until the next checkpoint). The checkpoint log (``<group>-checkpoints``) holds
the *fences* and *markers* that make a checkpoint atomic across tables and fence
zombies without Kafka transactions; :class:`Replay` reads it back. The protocol is
described in ``docs/reliability.md``; the engine that drives it is
:mod:`pipeline.agents.engine`. :class:`KafkaClients` makes the engine's consumers with
confluent-kafka; the deterministic simulation (``tests/sim``) passes its in-memory
broker's instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import Settings
from pipeline.topics import TopicSpec, ensure_specs

log = logging.getLogger(__name__)

#: Header of every changelog record: ``<writer>:<checkpoint seq>``.
CHECKPOINT_HEADER = "journeys-checkpoint"
#: Key of a local store's bookkeeping (:class:`Mark`); the steps' keys never start with NUL.
_MARK_KEY = b"\x00checkpoint"
_MISSING: Any = object()


class EngineError(RuntimeError):
    """The engine cannot go on (a changelog cannot be restored, outputs were lost)."""


class StateTooLarge(EngineError):
    """A state value over the producer's message limit: its message is a dead letter."""


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Journal:
    """The table writes of the message being processed, so that they can be undone
    when its step fails (the message then becomes a dead letter, state untouched)."""

    def __init__(self) -> None:
        self.entries: list[tuple[dict[str, bytes | None], str, Any]] = []

    def rollback(self) -> None:
        for dirty, key, previous in reversed(self.entries):
            if previous is _MISSING:
                dirty.pop(key, None)
            else:
                dirty[key] = previous
        self.entries.clear()


@dataclass
class Mark:
    """What a local store of one table partition holds: the state of checkpoint
    *marker* (writer, seq; None: no checkpoint yet), up to changelog offset *changelog*.
    *fence* is the checkpoint-log offset of the fence of the tenure that wrote it and
    *valid* each earlier writer's last valid checkpoint seq, as known at that fence: a
    restore replays the checkpoint log from *fence* on, with *valid*."""

    marker: tuple[str, int] | None
    changelog: int
    fence: int
    valid: dict[str, int]

    def encode(self) -> bytes:
        return encode_json(
            {
                "marker": list(self.marker) if self.marker else None,
                "changelog": self.changelog,
                "fence": self.fence,
                "valid": self.valid,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> Mark | None:
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
            marker = obj["marker"]
            return cls(
                (str(marker[0]), int(marker[1])) if marker else None,
                int(obj["changelog"]),
                int(obj["fence"]),
                {str(k): int(v) for k, v in obj["valid"].items()},
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None  # an older layout, or damaged: the store is rebuilt


class StateTable(MutableMapping[str, Any]):
    """Key-value state of one step, partitioned like its input topic.

    Reads and writes go to :attr:`partition`, which the engine sets before each
    message (the partition of the message, or 0 for a one-partition table). Values
    are JSON; a read decodes a fresh copy, so a caller's changes reach the table
    only through ``table[key] = value``. Reading a partition this worker does not
    hold finds nothing (the identity router on a worker without the identity
    owner's partition); writing one is an error, and so is a value over
    :attr:`max_value_bytes` (:class:`StateTooLarge`).
    """

    def __init__(
        self,
        name: str,
        changelog: str,
        partitions: int,
        root: Path,
        journal: Journal | None = None,
        max_value_bytes: int = 900_000,
    ) -> None:
        self.name = name
        self.changelog = changelog
        self.partitions = partitions
        self.root = root / name
        self.partition = 0
        self.journal = journal
        self.max_value_bytes = max_value_bytes
        self._dbs: dict[int, Any] = {}
        #: Writes since the last checkpoint: encoded value, or None for a delete.
        self._dirty: dict[int, dict[str, bytes | None]] = {}

    # -- the mapping ---------------------------------------------------------------------

    def _raw(self, key: str) -> bytes | None:
        p = self.partition
        dirty = self._dirty.get(p)
        if dirty is not None and key in dirty:
            return dirty[key]
        db = self._dbs.get(p)
        return None if db is None else db.get(key.encode())

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._raw(key)
        return default if raw is None else json.loads(raw)

    def __getitem__(self, key: str) -> Any:
        raw = self._raw(key)
        if raw is None:
            raise KeyError(key)
        return json.loads(raw)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._raw(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        encoded = encode_json(value)
        if len(encoded) + len(key) > self.max_value_bytes:
            raise StateTooLarge(
                f"table {self.name}: value of {len(encoded)} bytes is over the "
                f"{self.max_value_bytes} bytes a changelog message may carry"
            )
        self._write(key, encoded)

    def __delitem__(self, key: str) -> None:
        self._write(key, None)

    def _write(self, key: str, encoded: bytes | None) -> None:
        if self.partition not in self._dbs:
            raise EngineError(f"table {self.name}: partition {self.partition} is not held here")
        dirty = self._dirty.setdefault(self.partition, {})
        if self.journal is not None:
            self.journal.entries.append((dirty, key, dirty.get(key, _MISSING)))
        dirty[key] = encoded

    def __iter__(self) -> Iterator[str]:
        p = self.partition
        dirty = self._dirty.get(p, {})
        db = self._dbs.get(p)
        if db is not None:
            for raw_key in db.keys():  # noqa: SIM118 - a raw-mode Rdict cannot be iterated
                if raw_key.startswith(b"\x00"):
                    continue
                key = raw_key.decode()
                if key not in dirty:
                    yield key
        yield from (key for key, value in dirty.items() if value is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- partitions, checkpoints, restore ------------------------------------------------

    @property
    def held(self) -> list[int]:
        return sorted(self._dbs)

    def holds(self, partition: int) -> bool:
        return partition in self._dbs

    def open(self, partition: int) -> Any:
        """The local store of *partition* (created when missing)."""
        from rocksdict import Options, Rdict

        db = self._dbs.get(partition)
        if db is None:
            path = self.root / str(partition)
            path.mkdir(parents=True, exist_ok=True)
            db = self._dbs[partition] = Rdict(str(path), options=Options(raw_mode=True))
        return db

    def close(self, partition: int) -> None:
        """Let *partition* go (its unsaved writes are dropped)."""
        self._dirty.pop(partition, None)
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def wipe(self, partition: int) -> None:
        """Empty the local store of *partition* (it is rebuilt from the changelog)."""
        import shutil

        self.close(partition)
        shutil.rmtree(self.root / str(partition), ignore_errors=True)
        self.open(partition)

    def stored_mark(self, partition: int) -> Mark | None:
        return Mark.decode(self.open(partition).get(_MARK_KEY))

    def rewrite(self, partition: int, keys: Iterable[str]) -> None:
        """Mark *keys* changed with their stored values (deleted when absent), so that
        the next checkpoint writes them to the changelog again."""
        db = self._dbs[partition]
        dirty = self._dirty.setdefault(partition, {})
        for key in keys:
            if key not in dirty:
                dirty[key] = db.get(key.encode())

    def take_changes(self) -> dict[int, dict[str, bytes | None]]:
        """The writes since the last checkpoint (they stay readable until :meth:`save`)."""
        return {p: dirty for p, dirty in self._dirty.items() if dirty}

    def save(self, partition: int, changes: dict[str, bytes | None], mark: Mark | Any) -> None:
        """Write *changes* and the bookkeeping *mark* to the local store (one batch)."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        batch.put(_MARK_KEY, mark.encode() if isinstance(mark, Mark) else encode_json(mark))
        self._dbs[partition].write(batch)
        dirty = self._dirty.get(partition)
        if dirty is changes:
            del self._dirty[partition]

    def close_all(self) -> None:
        for partition in list(self._dbs):
            self.close(partition)


@dataclass
class Task:
    """One input partition of a stage with tables, held by this engine: its writer id
    (new at every assignment), its checkpoint seq and what its last marker said."""

    topic: str
    partition: int
    tables: list[tuple[StateTable, int]]
    writer: str
    fence: int = -1
    seq: int = 0
    valid: dict[str, int] = field(default_factory=dict)
    input_offset: int | None = None
    reached: dict[str, int] = field(default_factory=dict)
    #: Per table, the last snapshot a valid marker holds (:mod:`pipeline.agents.snapshots`).
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per table, the growth from which :func:`~pipeline.agents.snapshots.due` looks again.
    snapshot_checked: dict[str, int] = field(default_factory=dict)
    #: Per table, the markers written since its last snapshot (in this process).
    snapshot_age: dict[str, int] = field(default_factory=dict)


# -- the checkpoint log ------------------------------------------------------------------


def fence_record(writer: str) -> bytes:
    return encode_json({"kind": "fence", "writer": writer})


def marker_record(
    writer: str,
    seq: int,
    input_offset: int | None,
    reached: dict[str, int],
    snapshots: dict[str, dict[str, Any]] | None = None,
) -> bytes:
    """A checkpoint marker: *writer*'s checkpoint *seq* is complete; the stage's input
    resumes at *input_offset*; each table's changelog offset reached, and where its
    last snapshot starts."""
    record = {"kind": "marker", "writer": writer, "seq": seq, "input": input_offset}
    if snapshots:
        record["snapshots"] = snapshots
    return encode_json({**record, "changelogs": reached})


def checkpoint_tag(writer: str, seq: int) -> bytes:
    return f"{writer}:{seq}".encode()


def parse_tag(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, int] | None:
    """The (writer, seq) of a changelog record's :data:`CHECKPOINT_HEADER`, if it has one."""
    for name, value in headers or ():
        if name == CHECKPOINT_HEADER:
            writer, _, seq = value.decode("utf-8", "replace").rpartition(":")
            try:
                return writer, int(seq)
            except ValueError:
                return None
    return None


@dataclass
class Replay:
    """The checkpoint log of one task (a stage's input partition), read in order.

    A fence makes its writer the current one; a marker counts only if its writer is
    the current one (a zombie's markers after a newer fence are ignored). A renewed
    fence (a snapshot's) only confirms the current writer, or names it when the log
    was cut just before it; a zombie's is ignored. *valid* maps
    each writer to its last valid checkpoint seq: a changelog record tagged (writer,
    seq) is applied on restore only if ``seq <= valid[writer]``, since a writer marks
    its checkpoints in order and stops at the first that fails.
    """

    valid: dict[str, int] = field(default_factory=dict)
    current: str | None = None
    last: dict[str, Any] | None = None
    ignored: int = 0

    def apply(self, raw: bytes | None) -> None:
        try:
            record = json.loads(raw or b"")
            kind, writer = record["kind"], str(record["writer"])
            if kind == "fence":
                if not record.get("renew") or self.current in (None, writer):
                    self.current = writer
                else:
                    self.ignored += 1
                return
            seq = int(record["seq"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint log: unreadable record skipped (%s)", exc)
            self.ignored += 1
            return
        if kind == "marker" and writer == self.current and seq > self.valid.get(writer, 0):
            self.valid[writer] = seq
            self.last = record
        else:
            self.ignored += 1

    def accepts(self, tag: tuple[str, int] | None) -> bool:
        return tag is not None and tag[1] <= self.valid.get(tag[0], 0)

    @property
    def marker(self) -> tuple[str, int] | None:
        return None if self.last is None else (str(self.last["writer"]), int(self.last["seq"]))

    def reached(self, table: str) -> int:
        """The changelog offset of *table* that the last valid marker reached (-1: none)."""
        return -1 if self.last is None else int(self.last["changelogs"].get(table, -1))

    @property
    def input_offset(self) -> int | None:
        if self.last is None or self.last.get("input") is None:
            return None
        return int(self.last["input"])


# -- Kafka clients -------------------------------------------------------------------------


class KafkaClients:
    """The engine's consumers and topic creation, with confluent-kafka."""

    OFFSET_BEGINNING = -2

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import KafkaException

        self.settings = settings
        #: What a failed commit raises (a member fenced out of the group).
        self.commit_errors: tuple[type[Exception], ...] = (KafkaException,)

    def consumer(self, config: dict[str, Any]) -> Any:
        from confluent_kafka import Consumer

        return Consumer({**self.settings.kafka_config(), **config})

    def ensure(self, specs: Iterable[TopicSpec]) -> None:
        ensure_specs(self.settings, specs)

    def partitions(self, consumer: Any, topic: str) -> list[int]:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            raise EngineError(f"topic {topic} does not exist")
        return sorted(meta.partitions)

    def tp(self, topic: str, partition: int, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition

        if offset is None:
            return TopicPartition(topic, partition)
        return TopicPartition(topic, partition, offset)
