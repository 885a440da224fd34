"""The worker's output producer: every message the stages return goes through librdkafka.

librdkafka takes a few µs per message in the calling thread and does the rest in its
own threads. Everything a step returns as an :class:`~pipeline.agents.messages.Out`,
and the engine's changelog records, are produced here.

At-least-once: the batch engine (:mod:`pipeline.agents.engine`) calls
:meth:`OutputProducer.flush_sync` at every checkpoint, before it commits offsets, and
commits nothing if a message was lost. One producer per worker, so the messages of one
partition leave in the order the steps produced them (the identity owner's merge
controls rely on it); ``enable.idempotence`` keeps that order across retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from pipeline.agents.messages import Out
from pipeline.core.dead_letters import dead_letter_record

if TYPE_CHECKING:
    from pipeline.serde import AvroSerde

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


class OutputTooLarge(ValueError):
    """An output over the producer's message limit: its input becomes a dead letter."""


class DeadLetters:
    """The dead letter of a message a stage could not process: its topic, partition,
    offset and raw bytes (redacted; cut to *max_payload* bytes, so that the dead letter
    itself is under the message limit), and the reason."""

    def __init__(
        self, serde: AvroSerde, topic: str, stage: str = "engine", max_payload: int = 65_536
    ) -> None:
        self.topic = topic
        self.stage = stage
        self.max_payload = max_payload
        self._encode = serde.encoder("DeadLetter")

    def __call__(self, error: str, raw: bytes, topic: str, partition: int, offset: int) -> Out:
        record = dead_letter_record(
            "pipeline", self.stage, error, raw, None, topic, partition, offset
        )
        size = len(record["payload"])
        if size > self.max_payload:
            record["payload"] = record["payload"][: self.max_payload]
            record["error"] += f" (payload cut to its first {self.max_payload} of {size} bytes)"
        return Out(self.topic, b"pipeline", self._encode(record))


class OutputProducer:
    """Produce :class:`Out` messages with confluent-kafka; :meth:`flush_sync` waits for acks.

    Delivery reports are served by :meth:`flush_sync` (and while librdkafka's queue is
    full): a failed delivery is kept until the next flush, which raises it.
    """

    def __init__(self, config: dict[str, Any], producer: Any = None) -> None:
        if producer is None:
            from confluent_kafka import Producer

            producer = Producer({**config, **OUTPUT_PRODUCER_CONF})
        self._producer = producer
        self._errors: list[str] = []
        self.produced = 0

    @property
    def unacknowledged(self) -> int:
        """Messages produced whose delivery report has not been served yet."""
        return len(self._producer)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _delivered_and(self, also: Callable[[Any, Any], None], err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))
        else:
            also(err, msg)

    def send(self, out: Out, on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        """Queue *out* in librdkafka; *on_delivery(err, msg)* is also called on its report
        when it was delivered."""
        self.produced += 1
        callback = (
            self._delivered if on_delivery is None else partial(self._delivered_and, on_delivery)
        )
        extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
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
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    self.produced -= 1
                    raise OutputTooLarge(f"{out.topic}: {exc}") from exc
                raise

    def flush_sync(self, timeout: float = 60.0) -> None:
        """Block until every message queued so far is acknowledged; raise if one failed.

        The batch engine's checkpoints call it between batches, on the event loop's
        thread: nothing is produced meanwhile.
        """
        left = self._producer.flush(timeout)
        if self._errors:
            errors, self._errors = self._errors[:5], []
            raise OutputError(f"output messages not delivered: {'; '.join(errors)}")
        if left:
            raise OutputError(f"{left} output messages not acknowledged after {timeout:.0f} s")
