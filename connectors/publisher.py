"""Publishing touchpoints and dead letters to Kafka (the connectors' thin I/O half)."""

from __future__ import annotations

import logging
from typing import Any

from connectors.base import Rejected
from pipeline.core.dead_letters import dead_letter_record
from pipeline.core.model import Touchpoint
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not acknowledge what was published."""


#: librdkafka settings of the publisher (on top of the connection settings).
PRODUCER_CONF: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "enable.idempotence": False,
    "acks": "all",
    "log.connection.close": False,
}


class Publisher:
    """Produces Avro touchpoints and dead letters; :meth:`flush` waits for every ack."""

    def __init__(self, settings: Settings, serde: AvroSerde, producer: Any = None) -> None:
        from confluent_kafka import Producer

        self.topics = Topics.from_settings(settings)
        conf: dict[str, Any] = {**settings.kafka_config(), **PRODUCER_CONF}
        self.producer = producer or Producer(conf)
        self._encode_tp = serde.encoder("Touchpoint")
        self._encode_dl = serde.encoder("DeadLetter")
        self.failed = 0
        self.errors: list[str] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(str(err))

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def touchpoint(self, tp: Touchpoint) -> None:
        self._produce(
            self.topics.touchpoints.name, tp.routing_key(), self._encode_tp(tp.to_record())
        )

    def rejected(self, rej: Rejected, stage: str) -> None:
        self.dead_letter(
            dead_letter_record(rej.source, stage, rej.error, rej.raw, location=rej.location)
        )

    def dead_letter(self, record: dict[str, Any]) -> None:
        self._produce(self.topics.dead_letters.name, record["source"], self._encode_dl(record))

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} messages not acknowledged within {timeout:.0f}s")
        if self.failed:
            raise PublishError(f"{self.failed} messages were refused by the broker: {self.errors}")
