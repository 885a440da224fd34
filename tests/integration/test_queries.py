"""The analyst's query library and the report, on one real run of the pipeline.

Every source the generator writes is replayed through the real broker (in event-time
order, the way the sources would have sent it live), a real ``journeys worker``
subprocess builds journeys and credit, and the sink writes them into a real chDB
engine. Every ``queries/*.sql`` file then runs through the read-only query endpoint,
the route ``journeys query`` and ``journeys report`` take while the pipeline owns the
data, and its totals are checked against the pipeline's own counts.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.generate import GenStats, generate
from connectors.publisher import Publisher
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.broker import free_port
from pipeline.core.attribution import MODELS
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from sinks.clickhouse import PARTITION_KEYS, SHARDED_TABLES
from sinks.query_server import remote_query
from sinks.report.sql import QueryFile, bind, load_query_files, parse_query_file
from tests.conftest import REPO, settings_env
from tests.integration.test_end_to_end import scrape
from tests.integration.test_query_speed import BEFORE, FIXED, same_cell

QUERIES = REPO / "queries"

#: generated file -> ``replay --source`` name
FILES = {
    "segment.jsonl": "segment",
    "sendgrid.jsonl": "sendgrid",
    "twilio.jsonl": "twilio",
    "shopify.jsonl": "shopify",
    "pos.csv": "pos",
    "ads.csv": "ads",
    "interactions.jsonl": "interactions",
}


@dataclass
class PipelineRun:
    """What one replay put in, and what the pipeline says it made of it."""

    settings: Settings
    service: SinkService
    generated: GenStats
    records: int = 0
    touchpoints: int = 0
    rejected: int = 0
    wall_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def scalar(self, sql: str) -> Any:
        return self.service.query(sql.format(db=self.settings.clickhouse_database))[1][0][0]


def _settled(count: Callable[[], int], worker: subprocess.Popen[bytes], quiet_s: float) -> None:
    last, since, deadline = -1, time.monotonic(), time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        now = count()
        if now != last or now == 0:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.3)
    raise AssertionError(f"the pipeline did not settle in 90 s (last count {last})")


def run_pipeline(
    cfg: Settings, out: Path, people: int = 90, days: int = 45, seed: int = 5
) -> tuple[PipelineRun, subprocess.Popen[bytes]]:
    """Generate, replay every file through broker + worker + sink, wait until it settles.

    Returns the run (its sink service still running and serving queries) and the worker.
    """
    gen = generate(out, people=people, days=days, seed=seed, malformed_share=0.01)
    ensure_topics(cfg)
    service = SinkService(cfg).start()
    run = PipelineRun(cfg, service, gen)
    metrics_port = free_port()
    worker = spawn(
        ["worker"], env=settings_env(cfg.model_copy(update={"metrics_port": metrics_port}))
    )
    started = time.monotonic()
    try:
        # Replay into a running worker, as a user does (make run, then make replay-sample):
        # wait until it holds the journey stage's partitions.
        held = 'journeys_engine_partitions_held{table="journey-states"}'
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            assert time.monotonic() < deadline, "the worker did not take its partitions"
            with contextlib.suppress(OSError):
                if scrape(metrics_port).get(held, 0) > 0:
                    break
            time.sleep(0.3)
        publisher = Publisher(cfg, service.serde)
        # Live, the sources would have sent their events interleaved in time: replay
        # them merged in event time, as `journeys replay --source auto` does, so no
        # source's events arrive a month behind the watermark.
        stats = replay_files(
            [out / name for name in FILES],
            [get_source(source) for source in FILES.values()],
            publisher.touchpoint,
            lambda rej: publisher.rejected(rej, "replay"),
        )
        publisher.flush()
        run.records, run.rejected, run.touchpoints = (
            stats.records,
            stats.rejected,
            stats.touchpoints,
        )
        inserted = service.sink.stats.rows
        deadline = time.monotonic() + 90
        while inserted["touchpoints"] < run.touchpoints or inserted["dead_letters"] < run.rejected:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            assert service.error is None, f"the sink stopped: {service.error}"
            assert time.monotonic() < deadline, f"ClickHouse holds {inserted} of {run}"
            time.sleep(0.3)
        _settled(lambda: inserted["attribution"] + inserted["journeys"], worker, quiet_s=3.0)
    except BaseException:
        stop_process(worker)
        service.stop()
        raise
    run.wall_s = time.monotonic() - started
    return run, worker


@pytest.fixture(scope="module")
def pipeline(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    root = tmp_path_factory.mktemp("queries")
    cfg = Settings(
        kafka_bootstrap=broker,
        clickhouse_url=f"chdb://{root / 'clickhouse'}",
        topic_prefix="tq" + format(time.time_ns() % 10**8, "08d"),
        partitions=4,
        data_dir=root / "worker",
        worker_id="tq-worker",
        sink_flush_ms=100,
        model_refit_every=25,
    )
    run, worker = run_pipeline(cfg, root / "sample")
    stop_process(worker)  # everything is in ClickHouse; the sink keeps serving queries
    db = cfg.clickhouse_database
    # The daily aggregate refreshes every minute: refresh it now that the data is in.
    run.service.client.command(f"SYSTEM REFRESH VIEW {db}.daily_channel_credit_mv")
    run.service.client.command(f"SYSTEM WAIT VIEW {db}.daily_channel_credit_mv")
    run.counts = {
        "touchpoints": int(run.scalar("SELECT count() FROM {db}.touchpoints FINAL")),
        "dead_letters": int(run.scalar("SELECT count() FROM {db}.dead_letters FINAL")),
        "converted": int(run.scalar("SELECT count() FROM {db}.journeys FINAL WHERE converted")),
        "null": int(run.scalar("SELECT count() FROM {db}.journeys FINAL WHERE NOT converted")),
    }
    run.counts["revenue_cents"] = round(
        100 * float(run.scalar("SELECT sum(revenue) FROM {db}.journeys FINAL WHERE converted"))
    )
    assert db == "journeys", "the query library names the database journeys"
    try:
        yield run
    finally:
        run.service.stop()


def query(run: PipelineRun, qf: QueryFile, **params: str) -> list[dict[str, Any]]:
    """Rows of *qf* through the read-only endpoint (the route of ``journeys query``)."""
    assert run.service.server is not None
    body = remote_query(run.service.server.port, bind(qf, params) + "\nFORMAT JSONEachRow")
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def by_name() -> dict[str, QueryFile]:
    return {qf.path.stem: qf for qf in load_query_files(QUERIES)}


def test_no_event_of_a_replay_in_event_time_arrives_late(pipeline: PipelineRun) -> None:
    """Every source merged in event time and replayed into a running worker: the
    journey stage's per-upstream watermarks and the engine's partition alignment let
    no event arrive late, although a third of the touchpoints need the identity owner
    and the sources' partitions are consumed at their own pace."""
    late = "SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'journey'"
    assert int(pipeline.scalar(late)) == 0


def test_touchpoints_are_forwarded_a_bounded_number_of_times(pipeline: PipelineRun) -> None:
    """A touchpoint routed to a person absorbed meanwhile is forwarded to the survivor
    (one more row for the sink, deduplicated by FINAL); never round in a loop, which
    FINAL would hide (a reversed merge once made 80,000 messages of 20,000)."""
    inserted = pipeline.service.sink.stats.rows["touchpoints"]
    assert pipeline.touchpoints <= inserted <= 1.2 * pipeline.touchpoints


@pytest.mark.timeout(240)
def test_every_query_returns_rows(pipeline: PipelineRun) -> None:
    assert pipeline.wall_s < 60, f"the pipeline took {pipeline.wall_s:.0f}s"
    assert pipeline.counts["converted"] > 10
    assert pipeline.counts["touchpoints"] + pipeline.counts["dead_letters"] == pipeline.records
    empty = [qf.path.name for qf in load_query_files(QUERIES) if not query(pipeline, qf)]
    assert not empty, f"no rows from {empty}"


def test_credit_by_channel_sums_to_the_converted_journeys(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["01_channel_credit_by_model"])
    converted, cents = pipeline.counts["converted"], pipeline.counts["revenue_cents"]
    rounding = 0.005 * len(rows) + 1e-6  # the query rounds to cents
    for model in MODELS:
        assert sum(float(r[f"{model}_conv"]) for r in rows) == pytest.approx(
            converted, abs=rounding
        )
        revenue = sum(float(r[f"{model}_rev"]) for r in rows)
        assert revenue * 100 == pytest.approx(cents, abs=100 * rounding)


def test_model_comparison_moves_credit_but_keeps_totals(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["02_model_comparison"])
    assert {r["model"] for r in rows} == set(MODELS)
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        rounding = 0.005 * len(mine) + 1e-6
        assert sum(float(r["delta_vs_last_touch"]) for r in mine) == pytest.approx(0, abs=rounding)
        assert sum(float(r["credit"]) for r in mine) == pytest.approx(
            pipeline.counts["converted"], abs=rounding
        )
    assert all(float(r["delta_vs_last_touch"]) == 0 for r in rows if r["model"] == "last_touch")


def test_paths_account_for_every_journey(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["03_top_paths"], limit="100000")
    assert sum(int(r["conversions"]) for r in rows) == pipeline.counts["converted"]
    assert sum(int(r["nulls"]) for r in rows) == pipeline.counts["null"]
    nulls = query(pipeline, by_name()["04_top_null_paths"], limit="100000")
    assert sum(int(r["nulls"]) for r in nulls) == pipeline.counts["null"]
    lengths = query(pipeline, by_name()["05_path_length_and_hops"])
    assert sum(int(r["conversions"]) for r in lengths) == pipeline.counts["converted"]
    assert all(int(r["hops"]) < max(int(r["touches"]), 1) for r in lengths)
    ttc = query(pipeline, by_name()["06_time_to_convert"])
    assert sum(int(r["conversions"]) for r in ttc) == pipeline.counts["converted"]


def test_first_by_last_matrix_and_assists(pipeline: PipelineRun) -> None:
    matrix = query(pipeline, by_name()["08_first_vs_last_touch"])
    assert sum(int(r["conversions"]) for r in matrix) == pipeline.counts["converted"]
    assists = query(pipeline, by_name()["07_assisted_conversions"])
    last = {r["channel"]: int(r["last_touch_conversions"]) for r in assists}
    assert sum(last.values()) == pipeline.counts["converted"]
    assert all(int(r["assisted_conversions"]) <= int(r["conversions_touched"]) for r in assists)


def test_device_mix_and_new_vs_returning_cover_every_conversion(pipeline: PipelineRun) -> None:
    converted = pipeline.counts["converted"]
    devices = query(pipeline, by_name()["11_device_mix"])
    assert sum(int(r["conversions"]) for r in devices) == converted
    customers = query(pipeline, by_name()["12_new_vs_returning"])
    assert sum(int(r["conversions"]) for r in customers) == converted
    assert {r["customer"] for r in customers} <= {"new", "returning"}


def test_bopis_counts_every_pickup_order(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["15_bopis"])
    pickups = int(
        pipeline.scalar(
            "SELECT count() FROM {db}.touchpoints FINAL "
            "WHERE source = 'shopify' AND properties['fulfillment'] = 'pickup'"
        )
    )
    assert pickups > 0
    assert sum(int(r["pickup_orders"]) for r in rows) == pickups
    assert all(0 < float(r["share_of_online"]) <= 1 for r in rows)


def test_markov_under_the_latest_snapshot_credits_every_conversion_once(
    pipeline: PipelineRun,
) -> None:
    per_conversion = pipeline.service.query(
        "SELECT conversion_event_id, sum(credit), any(model_version) "
        "FROM journeys.markov_credit_latest GROUP BY conversion_event_id"
    )[1]
    assert len(per_conversion) == pipeline.counts["converted"]
    assert all(float(c) == pytest.approx(1.0) for _e, c, _v in per_conversion)
    latest = {str(v) for _e, _c, v in per_conversion}
    assert len(latest) == 1 and latest != {""}
    # Where the stream used that same snapshot, both give each channel the same credit.
    (version,) = latest
    streamed = pipeline.service.query(
        "SELECT conversion_event_id, channel, sum(credit) FROM journeys.attribution_current "
        f"WHERE model = 'markov' AND model_version = '{version}' "
        "GROUP BY conversion_event_id, channel"
    )[1]
    view = {
        (str(e), str(ch)): float(c)
        for e, ch, c in pipeline.service.query(
            "SELECT conversion_event_id, channel, credit FROM journeys.markov_credit_latest"
        )[1]
    }
    for event, channel, credit in streamed:
        assert view[(str(event), str(channel))] == pytest.approx(float(credit)), event
    rows = query(pipeline, by_name()["16_markov_latest_by_channel"])
    assert sum(float(r["conversions"]) for r in rows) == pytest.approx(
        pipeline.counts["converted"], abs=0.0005 * len(rows) + 1e-6
    )


def test_since_parameter_filters(pipeline: PipelineRun) -> None:
    qf = by_name()["01_channel_credit_by_model"]
    late = query(pipeline, qf, since="2099-01-01")
    assert late == []


def test_merge_audit_counts_match_the_table(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["13_identity_merge_audit"])
    total = int(pipeline.scalar("SELECT count() FROM {db}.identity_merges FINAL"))
    assert sum(int(r["changes"]) for r in rows) == total


def test_daily_channel_totals_match_attribution(pipeline: PipelineRun) -> None:
    rows = query(pipeline, by_name()["14_daily_channel_credit"], model="markov")
    rounding = 0.005 * len(rows) + 1e-6
    assert sum(float(r["conversions"]) for r in rows) == pytest.approx(
        pipeline.counts["converted"], abs=rounding
    )
    exact = pipeline.scalar(
        "SELECT sum(conversions) FROM {db}.daily_channel_credit WHERE model = 'linear'"
    )
    assert float(exact) == pytest.approx(pipeline.counts["converted"], abs=1e-6)


def test_journeys_query_cli_binds_parameters(pipeline: PipelineRun) -> None:
    env = settings_env(pipeline.settings)
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "cli.main",
            "query",
            "--file",
            str(QUERIES / "03_top_paths.sql"),
            "--param",
            "limit=3",
            "--param",
            "since=2000-01-01",
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "3 row(s)" in done.stderr.decode()
    bad = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "cli.main", "query", "--file", str(QUERIES / "03_top_paths.sql"),
         "--param", "limit=many"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "limit" in bad.stderr.decode()


def test_report_reads_through_the_query_route(pipeline: PipelineRun, tmp_path: Path) -> None:
    from sinks.report.data import fetch_report
    from sinks.report.html import render_html

    assert pipeline.service.server is not None
    port = pipeline.service.server.port

    def runner(sql: str) -> bytes:
        return remote_query(port, sql)

    data = fetch_report(runner, pipeline.settings.clickhouse_database)
    assert data.conversions == pipeline.counts["converted"]
    # the bot share per source (issue 13): every touchpoint counted once, bots among them
    stored = pipeline.scalar("SELECT count() FROM {db}.touchpoints FINAL")
    assert sum(b.events for b in data.bots) == int(stored)
    flagged = pipeline.scalar("SELECT countIf(is_bot) FROM {db}.touchpoints FINAL")
    assert sum(b.bots for b in data.bots) == int(flagged)
    assert sum(c.credit for c in data.credit if c.model == "linear") == pytest.approx(
        pipeline.counts["converted"], abs=1e-6
    )
    html = render_html(data)
    assert "Bots by source" in html
    out = tmp_path / "report.html"
    out.write_text(html, encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    for svg in _svgs(html):
        ElementTree.fromstring(svg)

    # the CLI, in another process, while this one owns the chDB path
    command = ["report", "-q", "--html", str(out), "--model", "markov"]
    cli = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "cli.main", *command],
        env=settings_env(pipeline.settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr.decode()
    assert str(out) in cli.stderr.decode()
    assert "credited by markov" in out.read_text(encoding="utf-8")


def _svgs(html: str) -> Sequence[str]:
    parts = html.split("<svg")[1:]
    assert len(parts) >= 4
    return ["<svg" + p.split("</svg>", 1)[0] + "</svg>" for p in parts]


def test_every_version_of_a_row_shares_its_partition(pipeline: PipelineRun) -> None:
    """The analysts' profile merges FINAL within partitions (issue 16): exact only while
    no replacing key of a partitioned table spans two partitions, which the stream's
    data must keep true (tests/unit/test_partition_keys.py checks the DDL)."""
    for table in PARTITION_KEYS:
        key = SHARDED_TABLES[table]
        spread = pipeline.scalar(
            f"SELECT count() FROM (SELECT {key} FROM {{db}}.{table} "
            f"GROUP BY {key} HAVING uniqExact(_partition_id) > 1)"
        )
        assert int(spread) == 0, table


@pytest.mark.parametrize("name", sorted(p.stem for p in BEFORE.glob("*.sql")))
def test_each_query_answers_as_before_on_the_pipeline_data(
    pipeline: PipelineRun, name: str
) -> None:
    """The rewritten query, through the endpoint and its profile, against its version from
    before issue 16 run without it (tests/fixtures/queries_before_16), but for the
    documented fixes."""
    old = parse_query_file(BEFORE / f"{name}.sql")
    new = by_name()[name]
    body = pipeline.service.client.raw_query(bind(old, {}) + "\nFORMAT TSVWithNames")
    before = [line.split("\t") for line in body.decode().splitlines()]
    assert pipeline.service.server is not None
    body = remote_query(pipeline.service.server.port, bind(new, {}) + "\nFORMAT TSVWithNames")
    after = [line.split("\t") for line in body.decode().splitlines()]
    assert after[0] == before[0] and len(after) == len(before) > 1, name
    skip = FIXED.get(name, set())
    for row_a, row_b in zip(before[1:], after[1:], strict=True):
        for column, a, b in zip(before[0], row_a, row_b, strict=True):
            assert column in skip or same_cell(a, b), f"{name}: {column} {a!r} -> {b!r}"


def test_large_results_print_as_plain_text(pipeline: PipelineRun) -> None:
    env = settings_env(pipeline.settings)

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "cli.main", "query", *args],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )

    big = cli("SELECT number AS n FROM numbers(250)")
    assert big.returncode == 0, big.stderr.decode()
    assert big.stdout.decode().splitlines() == ["n", *(str(i) for i in range(250))]
    assert "250 row(s)" in big.stderr.decode()
    table = cli("SELECT number AS n FROM numbers(250)", "--format", "table")
    assert "━" in table.stdout.decode()
    csv = cli("SELECT number AS n, 'a' AS s FROM numbers(2)", "--format", "CSVWithNames")
    assert csv.stdout.decode().splitlines() == ['"n","s"', '0,"a"', '1,"a"']
