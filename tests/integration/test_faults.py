"""Faults on the real broker and the real ClickHouse engine: ``kill -9`` of a worker and of
the sink in the middle of a replay, a worker paused past its session timeout, a second
worker joining and leaving, and ClickHouse unavailable for a while. Each disturbed
replay must end with the answers of the undisturbed one (tests/integration/harness.py):
the same converted journeys, credit per model and channel, and identities.

The contract (DESIGN.md, "Reliability and security"): at-least-once everywhere with
idempotent sinks, so a worker or sink killed with ``kill -9`` and restarted loses and
duplicates nothing, and a sink that cannot reach ClickHouse backs off with its offsets
uncommitted and catches up.

What "duplicates nothing" means in ClickHouse: the tables are ReplacingMergeTrees keyed
by deterministic ids and analysts read them with ``FINAL`` (README, "Reliability").
The contract promises ``count() == uniqExact(event_id)`` *with* ``FINAL``. Without
``FINAL``, a redelivery that lands in a differently bounded batch is a second physical
row until a background merge collapses it; only redeliveries of the *same* batch are
dropped at insert time by the ``insert_deduplication_token``. The tests measure both and
assert the ``FINAL`` one; the raw count is only required to be at least the logical one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.generate import generate
from pipeline.agents.engine import engine_group
from pipeline.settings import Settings
from pipeline.topics import Topics, ensure_topics
from sinks.clickhouse import LockedClient
from tests.conftest import settings_env
from tests.integration.harness import (
    JOURNEY_KINDS,
    SINK_GROUP,
    Reference,
    Stack,
    answers,
    base_settings,
    calm_run,
    committed_offsets,
    expected_counts,
    group_lag,
    isolated,
    kill9,
    record_figures,
    replaying,
    sample,
    settled,
    wait_for,
)
from tests.integration.test_end_to_end import replay

RAW_TOUCHPOINTS = "SELECT count(), uniqExact(event_id) FROM {db}.touchpoints"
UNIQUE_JOURNEYS = "SELECT count(), uniqExact(journey_id) FROM {db}.journeys FINAL"
BAD_CREDIT = """
SELECT a.conversion_event_id, a.model, sum(a.credit), sum(a.revenue_credit), any(j.revenue)
FROM {db}.attribution_current AS a
INNER JOIN (SELECT conversion_event_id, revenue FROM {db}.journeys FINAL WHERE converted)
      AS j USING (conversion_event_id)
GROUP BY a.conversion_event_id, a.model
HAVING abs(sum(a.credit) - 1) > 1e-6 OR abs(sum(a.revenue_credit) - any(j.revenue)) > 1e-4
"""


# ---- a. kill -9 of the worker, then of the sink, in the middle of a replay ----------


@pytest.fixture(scope="module")
def reference(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The generated sample (every source) replayed through a stack nothing disturbs,
    once for the module."""
    tmp = tmp_path_factory.mktemp("faults")
    ref = calm_run(base_settings(broker, tmp, "f"), tmp, sample(tmp / "data"))
    record_figures("calm (test_faults)", ref.answers.figures())
    return ref


def disturbed_run(
    ref: Reference,
    tmp: Path,
    kill_worker: bool = False,
    kill_sink: bool = False,
    second_worker: bool = False,
    pause_worker: bool = False,
) -> None:
    """Replay the reference sample (slowly, so faults land mid-replay) into a fresh
    stack and disturb it on the way: ``kill -9`` the worker and/or the sink and restart
    them, let a second worker join the group and leave it again (two rebalances), or
    pause the worker with SIGSTOP past its session timeout while a second one runs and
    resume it (a zombie); then compare what ClickHouse holds with the undisturbed run."""
    name = "w" * kill_worker + "s" * kill_sink + "2" * second_worker + "p" * pause_worker
    cfg = isolated(ref.base, tmp, name)
    db = cfg.clickhouse_database
    (tmp / name).mkdir()
    ensure_topics(cfg)
    stack = Stack(cfg, tmp / name)
    stats = ref.stats
    try:
        stack.start_sink()
        stack.start_worker()
        # Slow enough that the faults hit while the log is still being published: about
        # 20 s of replay per fault (a restarted worker takes ~10 s to rejoin).
        faults = int(kill_worker) + int(kill_sink) + int(second_worker) + 2 * int(pause_worker)
        rate = max(stats.touchpoints / (20.0 * faults), 20.0)
        with replaying(cfg, ref.files, rate=rate) as (replay, done):
            wait_for(lambda: stack.count("touchpoints") > 0, 120, "the first touchpoints")
            if kill_worker:
                assert replay.is_alive(), "the replay ended before the worker could be killed"
                assert stack.worker is not None
                kill9(stack.worker)
                at_kill = stack.count("touchpoints")
                stack.start_worker()
                wait_for(
                    lambda: stack.alive_and(lambda: stack.count("touchpoints") > at_kill),
                    120,
                    "the restarted worker's first touchpoints",
                )
            if second_worker:
                # Same consumer group, its own table state: the partitions are shared
                # out, then all come back to the first worker when the second stops.
                other = stack.start_other(
                    "worker", {"JOURNEYS_DATA_DIR": str(tmp / name / "worker-2")}
                )
                try:
                    at_join = stack.count("touchpoints")
                    wait_for(
                        lambda: stack.alive_and(lambda: stack.count("touchpoints") > at_join + 50),
                        120,
                        "touchpoints while two workers share the partitions",
                    )
                    assert replay.is_alive(), "the replay ended while two workers ran"
                finally:
                    stack.others.remove(other)
                    stop_process(other)
            if pause_worker:
                pause_and_resume(stack, cfg, tmp / name, replay)
            if kill_sink:
                at_kill = stack.count("touchpoints")
                wait_for(
                    lambda: stack.alive_and(lambda: stack.count("touchpoints") > at_kill),
                    120,
                    "more touchpoints before the sink is killed",
                )
                assert replay.is_alive(), "the replay ended before the sink could be killed"
                assert stack.sink is not None
                kill9(stack.sink)
                stack.start_sink()
        again = done[0]
        assert (again.records, again.touchpoints, again.rejected) == (
            stats.records,
            stats.touchpoints,
            stats.rejected,
        )
        settled(expected_counts(stats, stack), cfg, 240, "the disturbed run", stack.check_alive)
        after = answers(stack.query, db)
        raw_count, raw_unique = (int(x) for x in stack.query(RAW_TOUCHPOINTS.format(db=db))[0])
        journeys, journey_ids = stack.query(UNIQUE_JOURNEYS.format(db=db))[0]
        bad_credit = stack.query(BAD_CREDIT.format(db=db))
    finally:
        stack.stop()
    what = {
        "w": "kill -9 worker",
        "s": "kill -9 sink",
        "2": "second worker",
        "p": "SIGSTOP worker",
    }
    record_figures(" + ".join(what[c] for c in name), after.figures())

    # Under FINAL one row per event_id; without FINAL a redelivery may still be a second
    # physical row until a merge.
    count, unique, _ = after.touchpoints
    assert count == unique, "duplicate event_id under FINAL"
    assert raw_unique == int(unique) and raw_count >= raw_unique
    # events in = touchpoints + dead letters, and none of them judged late on the way
    assert int(count) + after.dead_letters.get("replay", 0) == stats.records
    assert "journey" not in after.dead_letters, after.journey_dead
    assert journeys == journey_ids, "duplicate journey_id under FINAL"
    assert bad_credit == [], bad_credit[:5]
    # The answers: the same converted journeys, credit per model and channel, and
    # identities as the undisturbed run.
    # Journeys and credit first, identities apart: a failure says which stage differs.
    assert after.differences(ref.answers, JOURNEY_KINDS) == []
    assert after.differences(ref.answers, ("identities",)) == []


def pause_and_resume(stack: Stack, cfg: Settings, logs: Path, replay: threading.Thread) -> None:
    """A second worker joins; the first is paused (SIGSTOP) past its session timeout, so
    the group gives its partitions to the second, which must then move every partition
    on; the first is resumed (SIGCONT) and finds it has lost them."""
    assert stack.worker is not None
    stack.start_other("worker", {"JOURNEYS_DATA_DIR": str(logs / "worker-2")})
    at_join = stack.count("touchpoints")
    wait_for(
        lambda: stack.alive_and(lambda: stack.count("touchpoints") > at_join + 50),
        120,
        "touchpoints while two workers share the partitions",
    )
    touchpoints = Topics.from_settings(cfg).touchpoints.name
    stack.worker.send_signal(signal.SIGSTOP)
    try:
        paused = time.monotonic()
        before = committed_offsets(cfg, engine_group(cfg), [touchpoints])
        # Every partition of the input moves on while the first worker sleeps: the second
        # worker has taken over its partitions.
        wait_for(
            lambda: all(
                a > b
                for a, b in zip(
                    committed_offsets(cfg, engine_group(cfg), [touchpoints]), before, strict=True
                )
            ),
            90,
            "the second worker to move every partition on",
        )
        assert replay.is_alive(), "the replay ended while the first worker slept"
        time.sleep(max(0.0, 2.5 * cfg.session_timeout_s - (time.monotonic() - paused)))
    finally:
        stack.worker.send_signal(signal.SIGCONT)
    stack.check_alive()


@pytest.mark.timeout(300)
def test_kill_9_of_the_sink_mid_replay_loses_and_duplicates_nothing(
    reference: Reference, tmp_path: Path
) -> None:
    """``kill -9`` of the ``journeys sink`` process while the replay publishes: restarted,
    it reopens its chDB path, re-reads from the last committed offsets and ends with
    exactly the undisturbed answers."""
    disturbed_run(reference, tmp_path, kill_sink=True)


@pytest.mark.timeout(300)
def test_kill_9_of_the_worker_then_the_sink_mid_replay_gives_the_calm_answers(
    reference: Reference, tmp_path: Path
) -> None:
    """``kill -9`` of a ``journeys worker`` mid-replay, restart, then ``kill -9`` of the
    sink the same way: ClickHouse ends with exactly the undisturbed touchpoints, dead
    letters, converted journeys, credit per model and channel, and identities; no
    duplicate, and whole credit for every conversion. The restart exercises table
    recovery on Tansu (see tests/integration/test_broker_quirks.py)."""
    disturbed_run(reference, tmp_path, kill_worker=True, kill_sink=True)


@pytest.mark.timeout(300)
def test_a_second_worker_joining_and_leaving_mid_replay_gives_the_calm_answers(
    reference: Reference, tmp_path: Path
) -> None:
    """Scale out and back in mid-replay: a second ``journeys worker`` joins the consumer
    group (the partitions and their tables are shared out) and stops again (they come
    back). The answers are the undisturbed ones."""
    disturbed_run(reference, tmp_path, second_worker=True)


@pytest.mark.timeout(300)
def test_a_worker_paused_past_its_session_timeout_gives_the_calm_answers(
    reference: Reference, tmp_path: Path
) -> None:
    """SIGSTOP of a worker while a second one runs, for longer than the session timeout:
    the second takes its partitions over; SIGCONT, and the first (a zombie until it
    notices) rejoins. The answers are the undisturbed ones: what the zombie wrote after
    losing its partitions changes nothing."""
    disturbed_run(reference, tmp_path, pause_worker=True)


# ---- b. ClickHouse unavailable for a while --------------------------------------------


def _operational_error(message: str) -> Exception:
    from clickhouse_connect.driver.exceptions import OperationalError

    return OperationalError(message)


class FlakyClickHouse(LockedClient):
    """The real chDB client behind two switches.

    * ``down``: every insert raises the way clickhouse-connect does when the server is
      unreachable, before touching the engine.
    * ``lose_first_ack``: the first insert of each dedup token reaches the engine and is
      stored, then raises as a read timeout would: the sink cannot know it succeeded.

    Queries always work, so the test can watch.
    """

    def __init__(self, inner: LockedClient) -> None:
        super().__init__(inner.client, inner.url)
        self.lock = inner.lock
        self.down = threading.Event()
        self.lose_first_ack = threading.Event()
        self.refused = 0
        self.lost_acks = 0
        self._tokens: set[str] = set()

    def insert(
        self,
        table: str,
        rows: Any,
        columns: Any,
        database: str,
        token: str | None = None,
    ) -> None:
        if self.down.is_set():
            self.refused += 1
            raise _operational_error(
                "Error HTTPConnectionPool(host='clickhouse', port=8123): Max retries exceeded "
                "(Caused by NewConnectionError: [Errno 111] Connection refused)"
            )
        super().insert(table, rows, columns, database, token)
        if self.lose_first_ack.is_set() and token is not None and token not in self._tokens:
            self._tokens.add(token)
            self.lost_acks += 1
            raise _operational_error(
                "Error HTTPConnectionPool(host='clickhouse', port=8123): Read timed out."
            )


@pytest.mark.timeout(300)
def test_clickhouse_down_for_a_while_the_sink_backs_off_and_catches_up(
    stack_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ClickHouse refuses every insert for a while: the sink retries with growing pauses,
    commits no offset while it cannot write, and once ClickHouse is back it writes
    everything, exactly once under FINAL.

    How the outage is made: there is no ClickHouse server here (no Docker), and chDB runs
    inside the sink's process, so there is no network to cut. The fault is injected at the
    client boundary the sink talks to (``LockedClient.insert``): while the switch is on,
    inserts raise clickhouse-connect's own ``OperationalError`` with the message a refused
    connection gives, before reaching the engine; the real chDB engine sits behind it and
    stores what gets through. This exercises exactly the code that decides what to do on
    failure (``ClickHouseSink._insert_with_retry`` and ``_write``: back off, keep offsets,
    retry the same rows with the same dedup token). A fake HTTP ClickHouse would test
    clickhouse-connect's HTTP error mapping as well, but would also have to fake the
    engine's answers; this keeps the real engine. The sink's consumer group offsets are
    read from the real broker to show that nothing was committed during the outage.
    """
    cfg = isolated(stack_settings, tmp_path, "down")
    db = cfg.clickhouse_database
    (tmp_path / "down").mkdir()
    gen = generate(tmp_path / "data", people=30, days=20, seed=5, malformed_share=0.02)
    path = tmp_path / "data" / "segment.jsonl"
    ensure_topics(cfg)
    topics = Topics.from_settings(cfg)
    sink_inputs = [topics.person_touchpoints.name, topics.dead_letters.name]

    service = SinkService(cfg, serve_queries=False)
    flaky = FlakyClickHouse(service.client)
    service.sink.client = flaky
    service.sink.backoff_max_s = 2.0
    worker = spawn(["worker"], env=settings_env(cfg))
    caplog.set_level(logging.WARNING, logger="sinks.runner")
    try:
        flaky.down.set()
        service.start()
        stats = replay(cfg, service, path)
        assert stats.rejected == gen.malformed > 0

        # The worker's output piles up in the topics while the sink cannot write.
        settled(lambda: True, cfg, 120, "the worker's output for the replay", sink=False)
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        wait_for(lambda: flaky.refused >= 4, 60, "a few refused inserts")
        # Nothing written, nothing committed, and the sink is still trying.
        assert service.sink.stats.batches == 0
        assert service.sink.stats.rows == {} or sum(service.sink.stats.rows.values()) == 0
        assert all(o < 0 for o in committed_offsets(cfg, SINK_GROUP, sink_inputs))
        assert group_lag(cfg, SINK_GROUP, sink_inputs) > 0
        assert service.error is None and service.thread.is_alive()
        assert scalar(service, f"SELECT count() FROM {db}.touchpoints") == 0
        # It backs off: the pauses it announces grow (0.2 s, 0.4 s, 0.8 s ... capped).
        pauses = [
            float(r.getMessage().rsplit("retrying in ", 1)[1].split("s", 1)[0])
            for r in caplog.records
            if "retrying in" in r.getMessage()
        ]
        assert len(pauses) >= 4 and pauses[:4] == sorted(pauses[:4]) and pauses[1] > pauses[0]
        refused_before = flaky.refused

        # Back, but the first answer to every insert is lost after the engine stored it:
        # the sink retries the same rows with the same insert_deduplication_token.
        flaky.lose_first_ack.set()
        # No background merge may hide a second copy: the raw count below must see it.
        service.client.command(f"SYSTEM STOP MERGES {db}.touchpoints")
        flaky.down.clear()
        settled(
            lambda: (
                scalar(service, f"SELECT count() FROM {db}.touchpoints FINAL") >= stats.touchpoints
                and scalar(service, f"SELECT count() FROM {db}.dead_letters FINAL")
                >= stats.rejected
            ),
            cfg,
            180,
            "the sink to catch up",
        )
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        count, unique = service.query(
            f"SELECT count(), uniqExact(event_id) FROM {db}.touchpoints FINAL"
        )[1][0]
        # events in = stored + dead letters; no duplicate under FINAL
        assert count == unique == stats.touchpoints
        dead = scalar(
            service, f"SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'replay'"
        )
        assert count + dead == stats.records
        # Every batch was stored once, its answer lost, and sent again with the same
        # insert_deduplication_token: ClickHouse dropped the second copy, so even without
        # FINAL each event is there once.
        assert flaky.lost_acks > 0
        raw = service.query(f"SELECT count(), uniqExact(event_id) FROM {db}.touchpoints")[1][0]
        assert raw[0] == raw[1] == stats.touchpoints
        assert flaky.refused >= refused_before
        assert service.sink.stats.retries >= flaky.refused + flaky.lost_acks
    finally:
        stop_process(worker)
        service.stop()


def scalar(service: SinkService, sql: str) -> int:
    return int(service.query(sql)[1][0][0])
