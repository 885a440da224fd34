"""The worker's output producer: the agents' messages go through librdkafka, not aiokafka.

Faust's own producer (aiokafka, in pure Python) costs about 100 µs of worker CPU per
message; librdkafka takes a few µs in the calling thread and does the rest in its own.
Faust keeps its producer for the tables' changelogs; everything an agent returns as an
:class:`~pipeline.agents.messages.Out` is produced here.

At-least-once holds as before: Faust commits offsets only after ``producer.flush()``,
and the worker's app (:mod:`pipeline.app`) makes that flush also wait until every message
produced here was acknowledged by the broker (or raise, so that nothing is committed
past a lost output). One producer per worker, shared by all agents, so the messages of
one partition leave in the order the agents produced them (the identity owner's merge
controls rely on it); ``enable.idempotence`` keeps that order across retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from pipeline.agents.messages import Out

log = logging.getLogger(__name__)

#: librdkafka settings of the output producer (on top of the connection settings).
OUTPUT_PRODUCER_CONF: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "acks": "all",
    "enable.idempotence": True,
    "log.connection.close": False,
}


class OutputError(RuntimeError):
    """An output message could not be delivered: offsets must not be committed."""


class OutputProducer:
    """Produce :class:`Out` messages with confluent-kafka; :meth:`flush` waits for acks.

    Everything runs on the event loop's thread: :meth:`send` queues a message in
    librdkafka (which sends it from its own threads after ``linger.ms``), and delivery
    reports are served by ``poll(0)`` from a background task and from :meth:`flush`.
    :meth:`flush` waits for the messages produced *before* it was called, not for an
    empty queue, which the agents might never leave under a steady load.
    """

    def __init__(self, config: dict[str, Any], producer: Any = None) -> None:
        if producer is None:
            from confluent_kafka import Producer

            producer = Producer({**config, **OUTPUT_PRODUCER_CONF})
        self._producer = producer
        self._errors: list[str] = []
        self._poller: asyncio.Task[None] | None = None
        self._seq = 0
        #: Sequence numbers of the messages not yet acknowledged, oldest first.
        self._pending: dict[int, None] = {}

    @property
    def produced(self) -> int:
        return self._seq

    @property
    def unacknowledged(self) -> int:
        """Messages produced and not yet acknowledged by the broker."""
        return len(self._pending)

    def _delivered(
        self, seq: int, also: Callable[[Any, Any], None] | None, err: Any, msg: Any
    ) -> None:
        self._pending.pop(seq, None)
        if err is not None:
            self._errors.append(str(err))
        elif also is not None:
            also(err, msg)

    def send(self, out: Out, on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        """Queue *out* in librdkafka; *on_delivery(err, msg)* is also called on its report."""
        if self._poller is None:
            self._start_poller()
        self._seq += 1
        seq = self._seq
        self._pending[seq] = None
        extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
        callback = partial(self._delivered, seq, on_delivery)
        while True:
            try:
                self._producer.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=list(out.headers) or None,
                    on_delivery=callback,
                    **extra,
                )
                return
            except BufferError:
                # librdkafka's queue is full: serve delivery reports until there is room.
                self._producer.poll(0.05)

    def send_all(self, outs: list[Out]) -> None:
        for out in outs:
            self.send(out)

    def _start_poller(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._poller = loop.create_task(self._poll())

    async def _poll(self) -> None:
        """Serve delivery reports now and then, so that the queue of reports stays short."""
        while True:
            self._producer.poll(0)
            await asyncio.sleep(0.05)

    def _oldest_pending(self) -> int | None:
        return next(iter(self._pending), None)

    async def flush(self) -> None:
        """Wait until every message produced so far is acknowledged; raise if one failed."""
        target = self._seq
        while True:
            self._producer.poll(0)
            if self._errors:
                errors, self._errors = self._errors[:5], []
                raise OutputError(f"output messages not delivered: {'; '.join(errors)}")
            oldest = self._oldest_pending()
            if oldest is None or oldest > target:
                return
            await asyncio.sleep(0.002)

    def flush_sync(self, timeout: float = 60.0) -> None:
        """Block until every message queued so far is acknowledged; raise if one failed.

        For the batch engine (:mod:`pipeline.agents.engine`), whose checkpoints run
        between batches on the event loop's thread: nothing is produced meanwhile.
        """
        left = self._producer.flush(timeout)
        if self._errors:
            errors, self._errors = self._errors[:5], []
            raise OutputError(f"output messages not delivered: {'; '.join(errors)}")
        if left:
            raise OutputError(f"{left} output messages not acknowledged after {timeout:.0f} s")

    async def close(self) -> None:
        await self.flush()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
