"""Prometheus metrics (pipeline.metrics): the text format, the HTTP endpoint on a real
port, and the worker's, sink's and collector's families read from their real counters.
The end-to-end scrape of a real worker and sink is in
tests/integration/test_end_to_end.py."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli.stack import child_env, settings_for
from connectors.base import Rejected
from connectors.collector import (
    CollectorConfig,
    CollectorStats,
    collector_metrics,
    create_collector,
)
from pipeline.agents.engine import Engine, Stage
from pipeline.agents.identity import IdentityRouter
from pipeline.agents.messages import Out
from pipeline.agents.output import OutputProducer
from pipeline.app import worker_metrics
from pipeline.broker import free_port
from pipeline.core.identity import IdentityGraph
from pipeline.core.model import Identifier, Touchpoint
from pipeline.metrics import (
    CONTENT_TYPE,
    MetricsError,
    MetricsServer,
    Registry,
    escape_label_value,
    format_value,
)
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics
from sinks.runner import SinkStats, sink_metrics
from tests.unit.kafka_fakes import FakeConsumer, FakeMessage, FakeProducer

# One sample line of the text format 0.0.4: name, optional {label="value",...}, value.
_LABEL_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(
    rf"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?P<labels>{_LABEL_PAIR}(?:,{_LABEL_PAIR})*)\}})?"
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|Inf|NaN))"
)


def check_exposition(text: str) -> dict[str, float]:
    """Parse *text* strictly (every line a HELP, a TYPE or a sample of the family just
    declared; HELP and TYPE once per family); returns ``{series: value}``."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    helped: set[str] = set()
    current = None
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in declared, f"TYPE twice for {name}"
            assert name == current, f"TYPE {name} not right after its HELP"
            assert kind in ("counter", "gauge")
            if kind == "counter":
                assert name.endswith("_total"), name
            declared[name] = kind
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            assert match["name"] == current, f"{line!r} outside its family {current}"
            key = line.rsplit(" ", 1)[0]
            assert key not in series, f"series twice: {key}"
            series[key] = float(match["value"])
    assert helped == set(declared)
    return series


# ---- the text format ------------------------------------------------------------------


def test_label_values_escape_backslashes_quotes_and_newlines() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    registry = Registry()
    registry.counter(
        "x_total",
        "Help with a \\ backslash\nand a newline.",
        lambda: {'C:\\dir "quoted"\nnext': 3},
        labels=("path",),
    )
    text = registry.render()
    assert text == (
        "# HELP x_total Help with a \\\\ backslash\\nand a newline.\n"
        "# TYPE x_total counter\n"
        'x_total{path="C:\\\\dir \\"quoted\\"\\nnext"} 3\n'
    )
    assert check_exposition(text) == {'x_total{path="C:\\\\dir \\"quoted\\"\\nnext"}': 3.0}


def test_help_and_type_once_per_family_and_samples_sorted_by_label() -> None:
    registry = Registry()
    registry.counter(
        "requests_total",
        "Requests.",
        lambda: {("/b", "200"): 2, ("/a", "404"): 1, ("/a", "200"): 5},
        labels=("route", "code"),
    )
    registry.gauge("queue", "Queued.", lambda: 7)
    text = registry.render()
    assert text.count("# HELP requests_total ") == 1 and text.count("# TYPE requests_total ") == 1
    assert text.splitlines() == [
        "# HELP requests_total Requests.",
        "# TYPE requests_total counter",
        'requests_total{route="/a",code="200"} 5',
        'requests_total{route="/a",code="404"} 1',
        'requests_total{route="/b",code="200"} 2',
        "# HELP queue Queued.",
        "# TYPE queue gauge",
        "queue 7",
    ]
    check_exposition(text)


def test_values_are_read_at_every_scrape() -> None:
    counts: dict[str, int] = {}
    total = [0]
    registry = Registry()
    registry.counter("seen_total", "Seen.", lambda: total[0])
    registry.counter("by_kind_total", "By kind.", lambda: dict(counts), labels=("kind",))
    assert "seen_total 0\n" in registry.render()
    assert "by_kind_total{" not in registry.render()  # declared, no series yet
    total[0] = 41
    counts["a"] = 2
    series = check_exposition(registry.render())
    assert series == {"seen_total": 41.0, 'by_kind_total{kind="a"}': 2.0}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (True, "1"),
        (2.0, "2"),
        (0.25, "0.25"),
        (1e300, "1e+300"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_counters_end_with_total_and_names_are_checked() -> None:
    registry = Registry()
    with pytest.raises(MetricsError, match="_total"):
        registry.counter("journeys_rows", "Rows.", lambda: 1)
    with pytest.raises(MetricsError, match="not a metric name"):
        registry.gauge("9lives", "No.", lambda: 1)
    with pytest.raises(MetricsError, match="not a label name"):
        registry.gauge("g", "No.", lambda: {}, labels=("bad-label",))
    with pytest.raises(MetricsError, match="not a label name"):
        registry.gauge("g", "No.", lambda: {}, labels=("__reserved",))
    with pytest.raises(MetricsError, match="twice"):
        registry.gauge("g", "No.", lambda: {}, labels=("a", "a"))
    registry.gauge("g", "Yes.", lambda: 1)
    with pytest.raises(MetricsError, match="declared twice"):
        registry.gauge("g", "Again.", lambda: 1)


def test_a_failing_reading_leaves_out_its_family_only(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> float:
        raise RuntimeError("dictionary changed size during iteration")

    registry = Registry()
    registry.counter("before_total", "Before.", lambda: 1)
    registry.counter("broken_total", "Broken.", broken)
    registry.gauge("wrong_arity", "Two labels, one value.", lambda: {"x": 1}, labels=("a", "b"))
    registry.gauge("after", "After.", lambda: 2)
    series = check_exposition(registry.render())
    assert series == {"before_total": 1.0, "after": 2.0}
    assert "broken_total" in caplog.text and "wrong_arity" in caplog.text


# ---- the HTTP endpoint ----------------------------------------------------------------


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_server_answers_metrics_and_404_elsewhere() -> None:
    hits = [0]
    registry = Registry()
    registry.counter("scrapes_seen_total", "Reads.", lambda: hits[0])
    port = free_port()
    server = MetricsServer(registry, "127.0.0.1", port)
    with pytest.raises(OSError):  # nothing listens before start()
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.start()
    try:
        assert server.port == port and server.url == f"http://127.0.0.1:{port}/metrics"
        hits[0] = 5
        status, content_type, body = get(server.url)
        assert status == 200 and content_type == CONTENT_TYPE
        assert check_exposition(body) == {"scrapes_seen_total": 5.0}
        assert get(server.url + "?name[]=x")[0] == 200
        for path in ("/", "/metric", "/metrics/x", "/healthz"):
            assert get(f"http://127.0.0.1:{port}{path}")[0] == 404, path
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()  # twice is harmless


def test_a_busy_port_is_an_error_that_names_the_setting() -> None:
    first = MetricsServer(Registry(), "127.0.0.1", 0).start()
    try:
        assert first.port > 0
        with pytest.raises(MetricsError, match="JOURNEYS_METRICS_PORT"):
            MetricsServer(Registry(), "127.0.0.1", first.port).start()
    finally:
        first.stop()


# ---- settings and the port rule of `journeys run` -----------------------------------------


def test_metrics_are_off_by_default_and_bind_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNEYS_METRICS_PORT", raising=False)
    monkeypatch.delenv("JOURNEYS_METRICS_HOST", raising=False)
    cfg = Settings()
    assert cfg.metrics_port is None and cfg.metrics_host == "127.0.0.1"
    monkeypatch.setenv("JOURNEYS_METRICS_PORT", "9464")
    monkeypatch.setenv("JOURNEYS_METRICS_HOST", "0.0.0.0")  # noqa: S104 - a container's
    cfg = Settings()
    assert cfg.metrics_port == 9464 and cfg.metrics_host == "0.0.0.0"  # noqa: S104
    monkeypatch.setenv("JOURNEYS_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="metrics_port"):
        Settings()


def test_journeys_run_gives_each_process_its_own_port() -> None:
    cfg = Settings(metrics_port=9464)
    ports = {role: settings_for(cfg, role).metrics_port for role in ("sink", "worker", "collector")}
    assert ports == {"sink": 9464, "worker": 9465, "collector": 9466}
    assert child_env(settings_for(cfg, "worker"))["JOURNEYS_METRICS_PORT"] == "9465"
    for port in (None, 0):  # off stays off; any free port stays any free port
        off = Settings(metrics_port=port)
        assert settings_for(off, "worker").metrics_port == port
    assert "JOURNEYS_METRICS_PORT" not in child_env(settings_for(Settings(), "collector"))


# ---- the worker's, sink's and collector's families ------------------------------------------


def test_the_worker_metrics_read_the_engine_output_and_router(tmp_path: Path) -> None:
    serde = AvroSerde.from_dir(REPO_ROOT / "schemas")
    settings = Settings(data_dir=tmp_path, worker_id="w", topic_prefix="m")
    topics = Topics.from_settings(settings)
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    value = serde.encode(
        "Touchpoint",
        Touchpoint(
            "e-1", "segment", None, t0, t0, "email", "page", (Identifier("user_id", "u-1"),)
        ).to_record(),
    )
    tp = topics.touchpoints.name
    batches = [
        [
            FakeMessage(tp, 0, 0, value=value),
            FakeMessage(tp, 1, 0, value=value),
            FakeMessage("other", 0, 0, value=b"x"),
        ]
    ]
    log: list[str] = []
    producer = FakeProducer(log)
    engine = Engine(
        settings, OutputProducer({}, producer=producer), consumer=FakeConsumer(log, batches)
    )
    router = IdentityRouter(serde, topics, IdentityGraph())
    engine.stage(Stage(tp, router.process))
    state = engine.table("state", partitions=2)
    state.open(1)

    def other(*_args: Any) -> list[Out]:
        return [Out("out", b"k", b"v")]

    engine.stage(Stage("other", other, (state,)))
    registry = worker_metrics(engine, router)
    before = check_exposition(registry.render())
    assert before[f'journeys_engine_messages_total{{topic="{tp}"}}'] == 0
    assert before['journeys_identity_fast_path_total{result="miss"}'] == 0

    assert engine.poll() == 3
    series = check_exposition(registry.render())
    assert series[f'journeys_engine_messages_total{{topic="{tp}"}}'] == 2
    assert series['journeys_engine_messages_total{topic="other"}'] == 1
    assert series["journeys_engine_batches_total"] == 1
    assert series['journeys_identity_fast_path_total{result="miss"}'] == 2  # nobody known yet
    assert series['journeys_identity_fast_path_total{result="hit"}'] == 0
    assert series['journeys_engine_partitions_held{table="state"}'] == 1
    assert series["journeys_output_messages_total"] == 3
    assert series["journeys_output_unacknowledged"] == 3  # not flushed yet
    engine.checkpoint()
    series = check_exposition(registry.render())
    assert series["journeys_output_unacknowledged"] == 0
    assert series["journeys_engine_checkpoints_total"] == 1
    assert "e-1" not in registry.render() and "u-1" not in registry.render()


def test_the_sink_metrics_read_its_stats() -> None:
    stats = SinkStats()
    registry = sink_metrics(stats)
    stats.rows["touchpoints"] += 120
    stats.rows["dead_letters"] += 3
    stats.batches, stats.retries = 4, 1
    assert check_exposition(registry.render()) == {
        'journeys_sink_rows_total{table="dead_letters"}': 3.0,
        'journeys_sink_rows_total{table="touchpoints"}': 120.0,
        "journeys_sink_batches_total": 4.0,
        "journeys_sink_retries_total": 1.0,
    }


class _Store:
    def __init__(self) -> None:
        self.fail = False

    async def __call__(self, touchpoints: list[Touchpoint], rejected: list[Rejected]) -> None:
        if self.fail:
            raise RuntimeError("broker down")


def test_the_collector_counts_answers_by_route_and_stored_records_by_source() -> None:
    dev = {"Authorization": "Basic " + base64.b64encode(b"dev:").decode()}
    track = {"userId": "u-1", "event": "Signed Up", "messageId": "m-1"}
    store = _Store()
    stats = CollectorStats()

    async def scenario() -> None:
        app = create_collector(CollectorConfig(), store, stats)
        async with TestClient(TestServer(app)) as client:
            for body in (track, track, {"event": "no user"}):
                (await client.post("/v1/track", json=body, headers=dev)).release()
            (await client.post("/v1/track", json=track)).release()  # no write key: 401
            (await client.post("/v1/batch", json={"batch": []}, headers=dev)).release()
            (await client.get("/healthz")).release()
            (await client.get("/wp-login.php?user=ana@example.com")).release()  # 404
            (await client.get("/v1/track")).release()  # 405
            store.fail = True
            (await client.post("/v1/track", json=track, headers=dev)).release()  # 503

    asyncio.run(scenario())
    series = check_exposition(collector_metrics(stats).render())
    assert series == {
        'journeys_collector_requests_total{route="/healthz",code="200"}': 1.0,
        'journeys_collector_requests_total{route="/v1/batch",code="400"}': 1.0,
        'journeys_collector_requests_total{route="/v1/track",code="200"}': 2.0,
        'journeys_collector_requests_total{route="/v1/track",code="400"}': 1.0,
        'journeys_collector_requests_total{route="/v1/track",code="401"}': 1.0,
        'journeys_collector_requests_total{route="/v1/track",code="503"}': 1.0,
        'journeys_collector_requests_total{route="other",code="404"}': 1.0,
        'journeys_collector_requests_total{route="other",code="405"}': 1.0,
        # stored only: the 503's records were not acknowledged
        'journeys_collector_touchpoints_total{source="segment"}': 2.0,
        'journeys_collector_dead_letters_total{source="segment"}': 3.0,
        "journeys_collector_sdk_metrics_total": 0.0,
    }
    assert "example.com" not in collector_metrics(stats).render()
