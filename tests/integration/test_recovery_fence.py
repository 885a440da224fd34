"""The record that ends each partition of the audiences table's changelog before Faust
recovers it (pipeline.agents.audience_table.fence_changelog). Faust recovers a table up to the
high watermark, which Tansu reports as the last batch's base offset + 1: without the
fence, the records of a last batch but its first lie beyond it (a kill -9 right after a
snapshot's batch lost a person's order in tests/integration/test_audiences.py)."""

from __future__ import annotations

import json

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.agents.audiences import RECOVERY_FENCE_KEY, fence_changelog, partition_for
from pipeline.settings import Settings


def _high(bootstrap: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
    finally:
        consumer.close()


def test_the_fence_brings_the_high_watermark_past_every_record(
    stack_settings: Settings,
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    topic = f"{stack_settings.worker_id}-audience-persons-changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 500})
    for n in range(5):  # one batch of five records, as a snapshot writes them
        producer.produce(topic, key=b"p%d" % n, value=b"{}", partition=0)
    assert producer.flush(15) == 0
    assert _high(bootstrap, topic, 0) == 1  # Tansu: the last batch's base offset + 1

    encode = str.encode
    written = fence_changelog(
        stack_settings, topic, 2, encode, lambda value: json.dumps(value).encode()
    )

    assert written == 2
    assert _high(bootstrap, topic, 0) == 6  # the fence is offset 5, alone in its batch
    assert _high(bootstrap, topic, 1) == 1
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-read", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 5)])
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        key = msg.key()
        assert key is not None and key.decode().startswith(RECOVERY_FENCE_KEY.format(partition=0))
        assert partition_for(key, 2) == 0  # a key of the partition it ends
    finally:
        consumer.close()


def test_no_fence_before_the_changelog_exists(stack_settings: Settings) -> None:
    topic = f"{stack_settings.worker_id}-audience-persons-changelog"
    assert fence_changelog(stack_settings, topic, 2, str.encode, str.encode) == 0
