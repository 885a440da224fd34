"""confluent-kafka's Consumer, Producer and Message, as far as the worker uses them, for
unit tests without a broker (the integration tests use the real ones)."""

from __future__ import annotations

from typing import Any


class Eof:
    def code(self) -> int:
        return -191  # KafkaError._PARTITION_EOF


class FakeMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        ts: int = 0,
        value: bytes = b"v",
        headers: list[tuple[str, bytes]] | None = None,
        eof: bool = False,
    ) -> None:
        self._t, self._p, self._o, self._ts = topic, partition, offset, ts
        self._v, self._h, self._eof = value, headers, eof

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return b""

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def error(self) -> Eof | None:
        return Eof() if self._eof else None


class FakeProducer:
    """confluent-kafka's Producer: acknowledges everything on flush, with offsets."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.fail = False
        self.offsets: dict[tuple[str, int], int] = {}
        self.queued: list[tuple[Any, FakeMessage]] = []

    def produce(self, topic: str, **kw: Any) -> None:
        partition = kw.get("partition", 0)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        self.queued.append((kw["on_delivery"], FakeMessage(topic, partition, offset)))
        self.log.append(f"produce {topic}[{partition}] {kw['key']!r}={kw['value']!r}")

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.queued)

    def flush(self, _timeout: float = 0) -> int:
        self.log.append("flush")
        for callback, msg in self.queued:
            callback("broker down" if self.fail else None, msg)
        self.queued.clear()
        return 0


class FakeConsumer:
    def __init__(self, log: list[str], batches: list[list[FakeMessage]]) -> None:
        self.log = log
        self.batches = batches

    def consume(self, _n: int, timeout: float = 0) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        self.log.append("close")

    def commit(self, offsets: list[Any], asynchronous: bool = True) -> None:
        self.log.append(
            "commit " + ",".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
        )
