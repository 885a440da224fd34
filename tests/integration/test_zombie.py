"""A zombie worker on the real broker (issue 12): ``SIGSTOP`` a worker mid-replay past
its session timeout, let a second worker take its partitions over, then ``SIGCONT``
it. The checkpoint log's fences make the woken worker's late checkpoints count for
nothing (``docs/reliability.md``). ClickHouse ends with the undisturbed run's
touchpoints and dead letters, no duplicate journey, and whole credit for every
conversion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.stack import stop_process
from pipeline.topics import ensure_topics
from tests.integration.test_faults import (
    BAD_CREDIT,
    UNIQUE_JOURNEYS,
    Reference,
    Stack,
    expected_counts,
    isolated,
    reference,
    replaying,
    settled,
    spawn_prefix,
    totals,
    wait_for,
)

__all__ = ["reference"]  # the module-scoped fixture of the undisturbed run


def checkpoint_log(cfg: Settings) -> tuple[dict[tuple[int, bytes], list[str]], int]:
    """The writers that fenced each task of the engine's checkpoint log, in order, and
    the number of markers written by a writer after another's newer fence."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.agents.engine import engine_group

    topic = f"{engine_group(cfg)}-checkpoints"
    reader = Consumer({**cfg.kafka_config(), "group.id": "zombie-check"})
    fences: dict[tuple[int, bytes], list[str]] = {}
    ignored = 0
    try:
        partitions = reader.list_topics(topic, timeout=15).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions}
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(seen.get(p, -1) + 1 < e for p, e in ends.items()):
            for msg in reader.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                partition, key = msg.partition() or 0, msg.key() or b""
                seen[partition] = msg.offset() or 0
                record = json.loads(msg.value() or b"{}")
                writers = fences.setdefault((partition, key), [])
                if record["kind"] == "fence":
                    writers.append(record["writer"])
                elif writers and record["writer"] != writers[-1]:
                    ignored += 1
    finally:
        reader.close()
    return fences, ignored


@pytest.mark.timeout(420)
def test_a_stopped_worker_that_wakes_after_a_takeover_changes_nothing(
    reference: Reference, tmp_path: Path
) -> None:
    cfg = isolated(reference.base, tmp_path, "zombie")
    db = cfg.clickhouse_database
    (tmp_path / "zombie").mkdir()
    ensure_topics(cfg)
    stack = Stack(cfg, tmp_path / "zombie")
    stats = reference.stats
    other: subprocess.Popen[bytes] | None = None
    try:
        stack.start_sink()
        stack.start_worker()
        assert stack.worker is not None
        rate = max(stats.records / 45.0, 20.0)
        with replaying(cfg, reference.path, rate=rate) as (replay, done):
            wait_for(lambda: stack.count("touchpoints") > 0, 120, "the first touchpoints")
            os.kill(stack.worker.pid, signal.SIGSTOP)
            env = {**stack.env, "JOURNEYS_DATA_DIR": str(tmp_path / "zombie" / "worker-2")}
            out = (tmp_path / "zombie" / "second-worker.log").open("wb")
            other = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [*spawn_prefix(), "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            out.close()
            at_takeover = stack.count("touchpoints")
            wait_for(
                lambda: stack.count("touchpoints") > at_takeover + 50,
                120,
                "the second worker's touchpoints while the first is stopped",
            )
            time.sleep(cfg.session_timeout_s)  # well past the session: the group went on
            assert replay.is_alive(), "the replay ended before the zombie woke"
            os.kill(stack.worker.pid, signal.SIGCONT)
        again = done[0]
        assert again.touchpoints == stats.touchpoints
        settled(expected_counts(stats, stack), cfg, 240, "the zombie run", stack.check_alive)
        assert other.poll() is None, "the second worker exited"
        after = totals(stack.query, db)
        fences, ignored = checkpoint_log(cfg)
        journeys, journey_ids = stack.query(UNIQUE_JOURNEYS.format(db=db))[0]
        bad_credit = stack.query(BAD_CREDIT.format(db=db))
    finally:
        if other is not None:
            stop_process(other)
        stack.stop()
    # The second worker fenced the stopped one's tasks (the zombie's markers after
    # that, if it checkpointed before it noticed, are what a restore ignores).
    assert any(len(writers) >= 2 for writers in fences.values()), fences
    print(f"zombie markers after a newer fence: {ignored}")
    assert after.touchpoints == reference.totals.touchpoints
    assert after.dead_letters == reference.totals.dead_letters
    assert journeys == journey_ids, "duplicate journey_id under FINAL"
    assert bad_credit == [], bad_credit[:5]
