"""The persistent embedded broker: Tansu on the local S3 endpoint on files
(pipeline.s3files). What it keeps across a kill -9, and the retention it is given."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.agents.checkpoint import fence_record, marker_record
from pipeline.agents.snapshots import renewed_fence, snapshot_entry
from pipeline.broker import BrokerError, DataLock, EmbeddedBroker, Janitor, cluster_id, free_port


def produce(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    offsets: list[int] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda _e, m: offsets.append(m.offset()))
    assert producer.flush(30) == 0
    return sorted(offsets)


def read_all(bootstrap: str, topic: str, group: str = "reader") -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    quiet = time.monotonic()
    try:
        while time.monotonic() - quiet < 3:
            msg = consumer.poll(0.3)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
                quiet = time.monotonic()
    finally:
        consumer.close()
    return got


def create(bootstrap: str, topic: str, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config or {})]).values():
        future.result()


def test_a_killed_broker_comes_back_with_every_record_and_offsets_go_on(
    persistent: EmbeddedBroker,
) -> None:
    """After kill -9 of Tansu and its S3 endpoint, check() restarts them: every
    acknowledged record is there, committed offsets too, and new records get new offsets
    (behind rclone serve s3, which ignores If-None-Match, they started at 0 again and
    overwrote the first batch)."""
    bootstrap = persistent.bootstrap
    create(bootstrap, "kept")
    first = produce(bootstrap, "kept", [b"a%d" % n for n in range(500)])
    assert first == list(range(500))
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False}
    )
    consumer.commit(offsets=[TopicPartition("kept", 0, 123)], asynchronous=False)
    consumer.close()
    ident = cluster_id(bootstrap)
    assert persistent.proc is not None and persistent.store is not None
    for proc in (persistent.proc, persistent.store):
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while persistent.dead() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    persistent.check()  # restarts both
    assert persistent.dead() is None
    assert cluster_id(bootstrap) == ident  # the same data, the same cluster
    assert produce(bootstrap, "kept", [b"b%d" % n for n in range(5)]) == list(range(500, 505))
    values = read_all(bootstrap, "kept")
    assert values == [b"a%d" % n for n in range(500)] + [b"b%d" % n for n in range(5)]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g"})
    try:
        committed = consumer.committed([TopicPartition("kept", 0)], timeout=10)
    finally:
        consumer.close()
    assert committed[0].offset == 123


def test_a_deleted_data_folder_comes_back_as_another_cluster(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    data = tmp_path / "broker"
    with EmbeddedBroker(bootstrap, storage="s3", data_dir=data):
        before = cluster_id(bootstrap)
    with EmbeddedBroker(bootstrap, storage="s3", data_dir=data):
        assert cluster_id(bootstrap) == before
    subprocess.run(["rm", "-rf", str(data)], check=True)  # noqa: S603, S607
    with EmbeddedBroker(bootstrap, storage="s3", data_dir=data):
        assert cluster_id(bootstrap) not in (before, None)


def test_one_data_folder_has_one_broker(persistent: EmbeddedBroker) -> None:
    assert persistent.data_dir is not None
    assert DataLock.held(persistent.data_dir)
    other = EmbeddedBroker(f"127.0.0.1:{free_port()}", storage="s3", data_dir=persistent.data_dir)
    with pytest.raises(BrokerError, match="another Journeys broker uses"):
        other.start(timeout=5)


def test_the_janitor_applies_retention_and_keeps_the_partition_usable(
    persistent: EmbeddedBroker,
) -> None:
    """Tansu stores retention.ms but never applies it; the janitor deletes the batches
    older than it, except the newest, and consumers still read from the earliest left."""
    bootstrap = persistent.bootstrap
    create(bootstrap, "short", {"retention.ms": "1000"})
    create(bootstrap, "forever")
    for batch in range(3):
        produce(bootstrap, "short", [b"s%d-%d" % (batch, n) for n in range(10)])
        produce(bootstrap, "forever", [b"f%d" % batch])
    janitor = Janitor(persistent)
    assert janitor.sweep() == 0  # nothing is a second old yet
    assert janitor.sweep(now=time.time() + 5) == 2  # two of three batches of "short"
    assert read_all(bootstrap, "short") == [b"s2-%d" % n for n in range(10)]
    assert read_all(bootstrap, "forever") == [b"f0", b"f1", b"f2"]
    assert produce(bootstrap, "short", [b"later"]) == [30]


def test_the_janitor_cuts_a_changelog_and_the_checkpoint_log_below_a_snapshot(
    persistent: EmbeddedBroker,
) -> None:
    """Tansu has no log compaction: once a valid marker records a snapshot (every live
    key written again from offset 20, its writer's fence renewed at offset 2), the
    janitor deletes the changelog's batches below 20 and the checkpoint log's below 2;
    what a restore reads is still there, and both topics take new records."""
    bootstrap = persistent.bootstrap
    changelog, checkpoints = "w-engine-states-changelog", "w-engine-checkpoints"
    create(bootstrap, changelog)
    create(bootstrap, checkpoints)
    for batch in range(3):
        produce(bootstrap, changelog, [b"c%d-%d" % (batch, n) for n in range(10)])
    snapshot = {"states": snapshot_entry(changelog, 0, 20, 2)}
    records = [
        fence_record("w1"),
        marker_record("w1", 1, 5, {"states": 19}),
        renewed_fence("w1"),
        marker_record("w1", 2, 9, {"states": 29}, snapshot),
    ]
    for record in records:
        produce(bootstrap, checkpoints, [record])
    janitor = Janitor(persistent)
    assert janitor.sweep() == 4  # two changelog batches, two checkpoint-log batches
    assert read_all(bootstrap, changelog) == [b"c2-%d" % n for n in range(10)]
    assert read_all(bootstrap, checkpoints) == records[2:]
    assert janitor.sweep() == 0
    assert produce(bootstrap, changelog, [b"later"]) == [30]
    assert produce(bootstrap, checkpoints, [fence_record("w2")]) == [4]


def test_the_janitor_keeps_each_models_newest_snapshot(persistent: EmbeddedBroker) -> None:
    """The journey stage keeps only each model's newest snapshot: the janitor deletes the
    batches of attribution-models below the oldest of those."""
    bootstrap = persistent.bootstrap
    topic = "x.attribution-models"
    create(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in [(b"markov", b"m1"), (b"shapley", b"s1"), (b"markov", b"m2")]:
        producer.produce(topic, value, key)
        assert producer.flush(30) == 0  # one batch each
    janitor = Janitor(persistent)
    assert janitor.sweep() == 1  # m1's batch; s1 is shapley's newest
    assert read_all(bootstrap, topic) == [b"s1", b"m2"]
    producer.produce(topic, b"s2", b"shapley")
    assert producer.flush(30) == 0
    assert janitor.sweep() == 1
    assert read_all(bootstrap, topic) == [b"m2", b"s2"]


def test_the_s3_endpoint_honours_conditional_writes(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "pipeline.s3files", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/b?list-type=2")
                conn.getresponse().read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)

        def call(method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, str]:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("ETag") or ""

        status, etag = call("PUT", "/b/k/x.json", b"one", **{"If-None-Match": "*"})
        assert status == 200 and etag
        assert call("PUT", "/b/k/x.json", b"two", **{"If-None-Match": "*"})[0] == 412
        assert call("GET", "/b/k/x.json", **{"If-None-Match": etag})[0] == 304
        assert call("PUT", "/b/k/x.json", b"two", **{"If-Match": '"stale"'})[0] == 412
        status, new = call("PUT", "/b/k/x.json", b"two", **{"If-Match": etag})
        assert status == 200 and new != etag
        assert (tmp_path / "b" / "k" / "x.json").read_bytes() == b"two"
        conn.request("GET", "/b?list-type=2&prefix=k/")
        listing = conn.getresponse().read().decode()
        assert "<Key>k/x.json</Key>" in listing and "<Size>3</Size>" in listing
        assert call("DELETE", "/b/k/x.json")[0] == 204
        assert call("GET", "/b/k/x.json")[0] == 404
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_retention_settings_reach_new_and_existing_topics(broker: str) -> None:
    from confluent_kafka.admin import ConfigResource

    from pipeline.settings import Settings
    from pipeline.topics import Topics, ensure_topics

    cfg = Settings(kafka_bootstrap=broker, topic_prefix="retention", retention_input_hours=1)

    def retention(topic: str) -> str:
        admin = AdminClient({"bootstrap.servers": broker})
        future = admin.describe_configs([ConfigResource("topic", topic)])
        configs = next(iter(future.values())).result()
        return str(configs["retention.ms"].value) if "retention.ms" in configs else ""

    ensure_topics(cfg)
    topics = Topics.from_settings(cfg)
    assert retention(topics.touchpoints.name) == "3600000"
    assert retention(topics.journeys.name) == str(168 * 3_600_000)
    assert retention(topics.closed_paths.name) == "3600000"  # an input of the learner
    assert retention(topics.attribution_models.name) == ""  # the janitor keeps the newest
    ensure_topics(cfg.model_copy(update={"retention_input_hours": 2.0}))
    assert retention(topics.touchpoints.name) == "7200000"
