"""One replay through the real broker, a real worker and the real ClickHouse engine."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.generate import generate
from connectors.publisher import Publisher
from connectors.registry import get_source
from connectors.replay import ReplayStats, replay_files
from pipeline.broker import free_port
from pipeline.settings import Settings
from pipeline.topics import Topics, ensure_topics
from sinks.clickhouse import SinkError
from tests.conftest import settings_env

# Persons are counted on the current identity mapping: a touchpoint keeps the person it
# was routed to, and a replay after a merge routes it to the survivor instead.
TOTALS = """
SELECT count() AS touchpoints,
       (SELECT uniqExact(person_id) FROM {db}.identities FINAL WHERE NOT is_deleted) AS persons,
       round(sum(revenue), 2) AS revenue, countIf(person_id = '') AS without_person
FROM {db}.touchpoints FINAL
"""
BY_CHANNEL = "SELECT channel, count() FROM {db}.touchpoints FINAL GROUP BY channel ORDER BY channel"
# Records rejected at ingestion never become touchpoints: events in = stored + these.
DEAD = "SELECT count() FROM {db}.dead_letters FINAL WHERE stage != 'journey'"
# The journey stage's dead letters are stored touchpoints it could not place in a
# journey: too late for the watermark (a replayed old event its person's state no
# longer remembers is one of them; it is stored once and credited at most once).
JOURNEY_ERRORS = (
    "SELECT DISTINCT splitByChar(':', error)[1] FROM {db}.dead_letters FINAL "
    "WHERE stage = 'journey'"
)


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, worker: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def replay(cfg: Settings, service: SinkService, path: Path) -> ReplayStats:
    publisher = Publisher(cfg, service.serde)
    stats = replay_files(
        [path],
        get_source("segment"),
        publisher.touchpoint,
        lambda rej: publisher.rejected(rej, "replay"),
    )
    publisher.flush()
    return stats


def scalar(service: SinkService, sql: str) -> int:
    return int(service.query(sql)[1][0][0])


def scrape(port: int) -> dict[str, float]:
    """``{series: value}`` from the Prometheus endpoint on *port*."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {key: float(value) for key, value in (line.rsplit(" ", 1) for line in lines)}


@pytest.mark.timeout(240)
def test_replay_lands_in_clickhouse_and_a_second_replay_changes_no_total(
    stack_settings: Settings, tmp_path: Path
) -> None:
    # The sink (in this process) and the worker each serve their metrics on a port.
    sink_port, worker_port = free_port(), free_port()
    cfg = stack_settings.model_copy(update={"metrics_port": sink_port})
    db = cfg.clickhouse_database
    gen = generate(tmp_path / "sample", people=60, days=20, seed=3, malformed_share=0.03)
    path = tmp_path / "sample" / "segment.jsonl"
    assert gen.malformed > 0

    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker_env = settings_env(cfg.model_copy(update={"metrics_port": worker_port}))
    worker = spawn(["worker"], env=worker_env)
    try:
        first = replay(cfg, service, path)
        assert first.records == gen.messages
        assert first.rejected == gen.malformed
        wait_for(
            lambda: (
                scalar(service, f"SELECT count() FROM {db}.touchpoints FINAL") >= first.touchpoints
                and scalar(service, DEAD.format(db=db)) >= first.rejected
            ),
            150,
            "the first replay in ClickHouse",
            worker,
        )
        totals = service.query(TOTALS.format(db=db))[1]
        channels = service.query(BY_CHANNEL.format(db=db))[1]
        touchpoints, persons, revenue, without_person = totals[0]
        # events in = stored + dead letters
        assert touchpoints + scalar(service, DEAD.format(db=db)) == first.records
        assert without_person == 0
        assert persons > 0
        assert revenue > 0
        assert {c for c, _ in channels} >= {"direct", "organic_search", "paid_search", "email"}
        # dead letters name file and line, and carry no raw e-mail
        errors = service.query(f"SELECT location, error, payload FROM {db}.dead_letters FINAL")[1]
        assert all(str(path) + ":" in loc for loc, _, _ in errors)
        assert not any("@example.net" in payload for _, _, payload in errors)
        # Once the journey stage has taken every touchpoint of the first replay, none of
        # them arrived late there (the partitions' alignment and the per-upstream
        # watermarks; without the alignment, hundreds did).
        person_topic = Topics.from_settings(cfg).person_touchpoints.name
        wait_for(
            lambda: (
                scrape(worker_port).get(
                    f'journeys_engine_messages_total{{topic="{person_topic}"}}', 0
                )
                >= first.touchpoints
            ),
            60,
            "the journey stage to take the first replay",
            worker,
        )
        time.sleep(1.0)  # the sink's next batch (250 ms) holds any dead letter it produced
        late = f"SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'journey'"
        assert scalar(service, late) == 0

        second = replay(cfg, service, path)
        assert second.touchpoints == first.touchpoints
        inserted = service.sink.stats.rows
        wait_for(
            lambda: (
                inserted["touchpoints"] >= 2 * first.touchpoints
                and inserted["dead_letters"] >= 2 * first.rejected
            ),
            150,
            "the second replay in ClickHouse",
            worker,
        )
        time.sleep(1.0)
        assert service.query(TOTALS.format(db=db))[1] == totals
        assert service.query(BY_CHANNEL.format(db=db))[1] == channels
        assert scalar(service, DEAD.format(db=db)) == first.rejected
        assert {r[0] for r in service.query(JOURNEY_ERRORS.format(db=db))[1]} <= {"late_event"}
        identities = scalar(service, f"SELECT count() FROM {db}.identities FINAL")
        assert identities > 0

        # Prometheus sees what happened: the worker read both replays' touchpoints, the
        # identity router took each one (by its fast path when it could), and the sink's
        # row counter is the one counted above.
        topic = Topics.from_settings(cfg).touchpoints.name
        worker_series = scrape(worker_port)
        consumed = worker_series[f'journeys_engine_messages_total{{topic="{topic}"}}']
        assert consumed >= 2 * first.touchpoints
        hits = worker_series['journeys_identity_fast_path_total{result="hit"}']
        misses = worker_series['journeys_identity_fast_path_total{result="miss"}']
        assert hits + misses == consumed and hits > 0
        assert worker_series["journeys_engine_checkpoints_total"] > 0
        before = inserted["touchpoints"]
        sink_series = scrape(sink_port)
        rows = sink_series['journeys_sink_rows_total{table="touchpoints"}']
        assert before <= rows <= inserted["touchpoints"]
        assert rows >= 2 * first.touchpoints
        assert sink_series["journeys_sink_retries_total"] == service.sink.stats.retries
    finally:
        stop_process(worker)
        service.stop()


@pytest.mark.timeout(120)
def test_analyst_queries_while_running_leave_the_sink_writable(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """`journeys query` during `journeys run` goes to the owner's read-only endpoint; the
    read-only setting must not stick to the sink's own connection (chDB keeps settings
    per client handle)."""
    from sinks.query_server import find_owner, remote_query

    cfg = stack_settings
    db = cfg.clickhouse_database
    gen = generate(tmp_path / "s", people=10, days=3, seed=5, malformed_share=0.0)
    ensure_topics(cfg)
    service = SinkService(cfg).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    try:
        port = find_owner(cfg.clickhouse_url)
        assert port is None  # this process is the owner: find_owner skips itself
        assert service.server is not None
        port = service.server.port
        assert remote_query(port, f"SELECT count() FROM {db}.touchpoints FORMAT TSV") == b"0\n"
        with pytest.raises(SinkError, match="readonly"):
            remote_query(port, f"DROP TABLE {db}.touchpoints")
        stats = replay(cfg, service, tmp_path / "s" / "segment.jsonl")
        assert stats.touchpoints == gen.messages
        wait_for(
            lambda: (
                remote_query(port, f"SELECT count() FROM {db}.touchpoints FORMAT TSV")
                == f"{gen.messages}\n".encode()
            ),
            90,
            "the touchpoints, read through the query endpoint",
            worker,
        )
        assert service.sink.stats.retries == 0
    finally:
        stop_process(worker)
        service.stop()
