"""An in-memory Kafka for the deterministic simulation: what the batch engine uses of
confluent-kafka (producer, group consumer with rebalance callbacks, assign-mode
readers, commits), seeded and single-threaded.

Topics are lists of messages with offsets. A producer's messages reach the broker only
when it flushes (that is their acknowledgement); a crash delivers a random prefix of
each partition's unflushed messages and loses the rest (an idempotent producer keeps a
partition's order). A group has one active member: a new member takes every partition
and the old one is not told (a paused worker, a zombie); its commits are refused.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.topics import TopicSpec

OFFSET_BEGINNING = -2
OFFSET_INVALID = -1001


class SimCommitError(RuntimeError):
    """A commit by a member that is no longer in the group's generation."""


@dataclass
class SimTP:
    """confluent_kafka.TopicPartition."""

    topic: str
    partition: int
    offset: int = OFFSET_INVALID


@dataclass
class SimMessage:
    """confluent_kafka.Message (a record, or an end-of-partition event)."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None = None
    _value: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None
    _ts: int = 0
    seq: int = 0  #: order of arrival at the broker, across topics
    eof: bool = False

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> Any:
        return _Eof() if self.eof else None


class _Eof:
    def code(self) -> int:
        return -191


class SimBroker:
    """Topics, consumer groups and their committed offsets."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[SimMessage]]] = {}
        self.committed: dict[str, dict[tuple[str, int], int]] = {}
        self.active: dict[str, SimConsumer] = {}
        self.seq = 0
        #: The first offset still held per partition (the janitor deleted the rest).
        self.low: dict[tuple[str, int], int] = {}

    def create(self, name: str, partitions: int) -> None:
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def partition_for(self, topic: str, key: bytes | None) -> int:
        n = len(self.topics[topic])
        return 0 if not key else zlib.crc32(key) % n  # librdkafka's consistent partitioner

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> SimMessage:
        log = self.topics[topic][partition]
        self.seq += 1
        msg = SimMessage(topic, partition, len(log), key, value, headers, self.seq, self.seq)
        log.append(msg)
        return msg

    def messages(self, topic: str) -> list[SimMessage]:
        """Every message of *topic*, in the order they reached the broker."""
        return sorted((m for log in self.topics[topic] for m in log), key=lambda m: m.seq)

    def end(self, topic: str, partition: int) -> int:
        return len(self.topics[topic][partition])

    def cut(self, topic: str, partition: int, floor: int) -> None:
        """Delete the records of a partition below *floor*, as the janitor does."""
        key = (topic, partition)
        self.low[key] = max(self.low.get(key, 0), floor)


@dataclass
class _Queued:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    on_delivery: Callable[[Any, Any], None] | None


class SimProducer:
    """confluent_kafka.Producer: queued until :meth:`flush`, which acknowledges all."""

    def __init__(self, broker: SimBroker) -> None:
        self.broker = broker
        self.queue: list[_Queued] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
        partition: int | None = None,
    ) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        if topic not in self.broker.topics:
            raise KeyError(f"unknown topic {topic}")
        p = self.broker.partition_for(topic, raw_key) if partition is None else partition
        self.queue.append(_Queued(topic, p, raw_key, value, headers, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.queue)

    def flush(self, _timeout: float = 0) -> int:
        queued, self.queue = self.queue, []
        for q in queued:
            msg = self.broker.append(q.topic, q.partition, q.key, q.value, q.headers)
            if q.on_delivery is not None:
                q.on_delivery(None, msg)
        return 0

    def crash(self, rng: random.Random) -> None:
        """The process dies: each partition keeps a random prefix of what was queued."""
        by_partition: dict[tuple[str, int], list[_Queued]] = {}
        for q in self.queue:
            by_partition.setdefault((q.topic, q.partition), []).append(q)
        kept = {k: rng.randint(0, len(v)) for k, v in by_partition.items()}
        for q in self.queue:
            k = (q.topic, q.partition)
            if kept[k] > 0:
                kept[k] -= 1
                self.broker.append(q.topic, q.partition, q.key, q.value, q.headers)
        self.queue = []


@dataclass
class SimConsumer:
    """confluent_kafka.Consumer: a group member (subscribe) or a reader (assign)."""

    broker: SimBroker
    config: dict[str, Any]
    rng: random.Random
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)
    topics: list[str] = field(default_factory=list)
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)
    rebalance: bool = False
    lost: bool = False
    closed: bool = False
    _eof_sent: set[tuple[str, int]] = field(default_factory=set)
    _assigned_in_callback: bool = False

    @property
    def group(self) -> str:
        return str(self.config["group.id"])

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.topics = list(topics)
        self.callbacks = callbacks
        self.broker.active[self.group] = self  # the old member is not told
        self.rebalance = True

    def assign(self, tps: Iterable[SimTP]) -> None:
        self._assigned_in_callback = True
        committed = self.broker.committed.get(self.group, {})
        self.positions = {}
        for tp in tps:
            key = (tp.topic, tp.partition)
            if tp.offset == OFFSET_BEGINNING:
                self.positions[key] = 0
            elif tp.offset is None or tp.offset < 0:
                self.positions[key] = committed.get(key, 0)
            else:
                self.positions[key] = tp.offset
        self._eof_sent.clear()

    def pause(self, tps: Iterable[SimTP]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in tps)

    def _join(self) -> None:
        self.rebalance = False
        tps = [SimTP(t, p) for t in self.topics for p in range(len(self.broker.topics[t]))]
        self._assigned_in_callback = False
        on_assign = self.callbacks.get("on_assign")
        if on_assign is not None:
            on_assign(self, tps)
        if not self._assigned_in_callback:
            self.assign(tps)

    def expire(self) -> None:
        """The group went on without this member: its next poll calls on_lost."""
        self.lost = True

    def consume(self, n: int, timeout: float = 0) -> list[SimMessage]:
        if self.closed:
            return []
        if self.lost:
            self.lost = False
            on_lost = self.callbacks.get("on_lost")
            tps = [SimTP(t, p) for t, p in self.positions]
            self.positions = {}
            if on_lost is not None:
                on_lost(self, tps)
            return []
        if self.rebalance:
            self._join()
        out: list[SimMessage] = []
        live = [k for k in sorted(self.positions) if k not in self.paused]
        self.rng.shuffle(live)
        budget = n
        for key in live:
            if budget <= 0:
                break
            log = self.broker.topics[key[0]][key[1]]
            pos = max(self.positions[key], self.broker.low.get(key, 0))
            take = min(budget, len(log) - pos, self.rng.randint(1, max(1, n)))
            if take > 0:
                out.extend(log[pos : pos + take])
                self.positions[key] = pos + take
                budget -= take
                self._eof_sent.discard(key)
            at_end = self.positions[key] >= len(log) and key not in self._eof_sent
            if at_end and self.config.get("enable.partition.eof"):
                self._eof_sent.add(key)
                out.append(SimMessage(key[0], key[1], len(log), eof=True))
        return out

    def lag(self) -> int:
        return sum(self.broker.end(t, p) - pos for (t, p), pos in self.positions.items())

    def commit(self, offsets: list[SimTP], asynchronous: bool = True) -> None:
        if self.broker.active.get(self.group) is not self:
            raise SimCommitError(f"{self.group}: not a member of the current generation")
        store = self.broker.committed.setdefault(self.group, {})
        for tp in offsets:
            store[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        if self.closed:
            return
        if self.topics and self.broker.active.get(self.group) is self:
            on_revoke = self.callbacks.get("on_revoke")
            if on_revoke is not None:
                on_revoke(self, [SimTP(t, p) for t, p in self.positions])
            del self.broker.active[self.group]
        self.closed = True

    def kill(self) -> None:
        """The process dies: no callback; its session expires."""
        if self.broker.active.get(self.group) is self:
            del self.broker.active[self.group]
        self.closed = True


class SimClients:
    """:class:`pipeline.agents.checkpoint.KafkaClients` on a :class:`SimBroker`."""

    OFFSET_BEGINNING = OFFSET_BEGINNING
    commit_errors: tuple[type[Exception], ...] = (SimCommitError,)

    def __init__(self, broker: SimBroker, rng: random.Random) -> None:
        self.broker = broker
        self.rng = rng
        self.made: list[SimConsumer] = []

    def consumer(self, config: dict[str, Any]) -> SimConsumer:
        consumer = SimConsumer(self.broker, config, self.rng)
        self.made.append(consumer)
        return consumer

    def ensure(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            self.broker.create(spec.name, spec.partitions)

    def partitions(self, _consumer: Any, topic: str) -> list[int]:
        return list(range(len(self.broker.topics[topic])))

    def tp(self, topic: str, partition: int, offset: int | None = None) -> SimTP:
        return SimTP(topic, partition, OFFSET_INVALID if offset is None else offset)
