"""Timestamp alignment of an aligned stage's partitions (see :class:`Aligner`)."""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Aligner:
    """The messages of one topic, handed out in timestamp order across its partitions.

    The journey stage keeps one event-time maximum per upstream ``touchpoints``
    partition; if one partition were processed far ahead of the others, their events
    would arrive late. librdkafka hands out what it fetched partition after partition,
    so the engine buffers this topic's messages and always processes the oldest head
    (by message timestamp; producers write in about event order, and a replay merges
    its files by event time). A partition's own order is never changed. While an
    assigned partition has nothing buffered but is behind the broker's high watermark,
    the others wait for it, at most ``max_wait_s`` at a time (as Kafka Streams does with
    ``max.task.idle.ms``), and not when ``max_buffered`` messages are waiting.
    """

    def __init__(self, max_wait_s: float = 0.5, max_buffered: int = 50_000) -> None:
        self.max_wait_s = max_wait_s
        self.max_buffered = max_buffered
        self.buffers: dict[int, deque[Any]] = {}
        self.count = 0
        self._waiting_since: float | None = None

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.buffers.setdefault(p, deque())

    def release(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.count -= len(self.buffers.pop(p, ()))

    def add(self, msg: Any) -> None:
        self.buffers.setdefault(msg.partition(), deque()).append(msg)
        self.count += 1

    def _blocked(self, behind: Callable[[int], bool]) -> bool:
        if self.count >= self.max_buffered:
            return False
        lagging = [p for p, buf in self.buffers.items() if not buf and behind(p)]
        if not lagging:
            self._waiting_since = None
            return False
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self.max_wait_s

    def ready(self, behind: Callable[[int], bool]) -> Iterator[Any]:
        """The messages that may be processed now, oldest first; *behind(p)* says whether
        partition *p* has messages at the broker that were not fetched yet."""
        if self.count == 0 or self._blocked(behind):
            return
        heap = [(buf[0].timestamp()[1], p) for p, buf in self.buffers.items() if buf]
        heapq.heapify(heap)
        while heap:
            _ts, p = heapq.heappop(heap)
            buf = self.buffers[p]
            yield buf.popleft()
            self.count -= 1
            if buf:
                heapq.heappush(heap, (buf[0].timestamp()[1], p))
            elif self._blocked(behind):
                return
