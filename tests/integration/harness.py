"""What the fault and guarantee tests share: a worker and a ``journeys sink`` as child
processes that can be killed, paused and restarted, replays of the generated sample in a
thread, waiting until every stage has consumed everything, and the *answers* a run
leaves in ClickHouse (converted journeys, credit per model and channel, identities,
dead letters), which an undisturbed run and a disturbed one must agree on.

The sample is every file of ``journeys generate`` (Segment, SendGrid, Twilio, Shopify,
POS, ads, interactions), replayed side by side in event time as ``journeys demo`` does.
:func:`arrive_late` writes a copy of it in which a share of the lines arrive late.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.stack import stop_process
from connectors.base import map_record
from connectors.generate import GenStats, generate
from connectors.publisher import Publisher
from connectors.registry import SOURCES, get_source
from connectors.replay import ReplayStats, file_format, replay_files, source_of_file
from pipeline.agents.engine import engine_group
from pipeline.core.attribution import DATA_DRIVEN_MODELS, MODELS
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics, ensure_topics
from sinks.query_server import find_owner, remote_query
from tests.conftest import settings_env

SINK_GROUP = "journeys-sink"
RULE_MODELS = tuple(m for m in MODELS if m not in DATA_DRIVEN_MODELS)

# ---- the sample -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The generated files and what the generator says about them."""

    files: tuple[Path, ...]
    gen: GenStats


def sample(out: Path, people: int = 150, days: int = 40, seed: int = 21) -> Sample:
    """Every source of ``journeys generate`` for *people*, 2% malformed lines."""
    gen = generate(out, people=people, days=days, seed=seed, malformed_share=0.02)
    return Sample(tuple(out / name for name in gen.files), gen)


def _event_time(path: Path, line: bytes, header: bytes | None) -> float | None:
    """The earliest event time of one line, as the replay maps it (None: unusable)."""
    source = get_source(source_of_file(path, SOURCES))
    try:
        if header is None:
            record: Any = json.loads(line)
        else:
            names = next(csv.reader([header.decode()]))
            values = next(csv.reader([line.decode()]))
            record = dict(zip(names, values, strict=True))
    except (ValueError, UnicodeDecodeError, StopIteration):
        return None
    mapped = map_record(source, record, line, datetime.now(UTC), f"{path}:0")
    if not mapped.touchpoints:
        return None
    return min(tp.occurred_at.timestamp() for tp in mapped.touchpoints)


def arrive_late(
    files: tuple[Path, ...],
    out: Path,
    share: float = 0.15,
    least_s: float = 60.0,
    most_s: float = 48 * 3600.0,
    seed: int = 12,
) -> tuple[tuple[Path, ...], int]:
    """A copy of *files* in *out* where *share* of the lines arrive late.

    A late line is moved to where its event time plus a delay drawn between *least_s*
    and *most_s* falls among the file's other lines; the others keep their order (a
    line whose time cannot be read keeps the time of the line before it). Replayed side
    by side in event time, the late lines reach the pipeline that much behind. Returns
    the new files and the number of lines moved.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    moved = 0
    for path in files:
        lines = [ln for ln in path.read_bytes().splitlines(keepends=True) if ln.strip()]
        header = lines.pop(0) if file_format(path) == "csv" else None
        keyed: list[tuple[float, int, bytes]] = []
        last = 0.0
        for index, line in enumerate(lines):
            at = _event_time(path, line.rstrip(b"\r\n"), header)
            last = at if at is not None else last
            delay = 0.0
            if at is not None and rng.random() < share:
                delay = rng.uniform(least_s, most_s)
                moved += 1
            keyed.append((last + delay, index, line))
        keyed.sort(key=lambda item: (item[0], item[1]))
        target = out / path.name
        target.write_bytes((header or b"") + b"".join(line for _, _, line in keyed))
        written.append(target)
    return tuple(written), moved


# ---- processes and waiting ------------------------------------------------------------


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9``: no handler, no flush, no commit, no close."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def spawn_prefix() -> list[str]:
    # The same interpreter and module as cli.stack.spawn, with our own log files.
    return [sys.executable, "-m", "cli.main"]


class Stack:
    """Workers, a ``journeys sink`` and a collector as child processes, each killable
    on its own."""

    def __init__(self, cfg: Settings, logs: Path, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = settings_env(cfg) | (env or {})
        self.logs = logs
        self.worker: subprocess.Popen[bytes] | None = None
        self.sink: subprocess.Popen[bytes] | None = None
        self.others: list[subprocess.Popen[bytes]] = []
        self.starts = 0

    def spawn(self, command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{command}-{self.starts}.log").open("wb")
        try:
            return subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [*spawn_prefix(), command],
                env=self.env | (env or {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def start_worker(self) -> None:
        self.worker = self.spawn("worker")

    def start_other(self, command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A further process (a second worker, a collector), stopped with the stack."""
        proc = self.spawn(command, env)
        self.others.append(proc)
        return proc

    def start_sink(self) -> None:
        self.sink = self.spawn("sink")
        wait_for(self._sink_serves, 120, "the sink's query endpoint")

    def _sink_serves(self) -> bool:
        assert self.sink is not None
        assert self.sink.poll() is None, f"the sink exited with {self.sink.returncode}"
        port = find_owner(self.cfg.clickhouse_url)
        if port is None:
            return False
        try:
            remote_query(port, "SELECT 1", timeout=10)
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return True

    def query(self, sql: str) -> list[list[str]]:
        """Rows of *sql* (as TSV strings) through the sink's read-only endpoint."""
        port = find_owner(self.cfg.clickhouse_url)
        assert port is not None, "no live process owns the ClickHouse data"
        body = remote_query(port, sql.strip() + "\nFORMAT TSV", timeout=60)
        return [line.split("\t") for line in body.decode().splitlines()]

    def count(self, table: str, final: bool = True) -> int:
        db = self.cfg.clickhouse_database
        return int(self.query(f"SELECT count() FROM {db}.{table}{' FINAL' if final else ''}")[0][0])

    def check_alive(self) -> None:
        for name, proc in (("worker", self.worker), ("sink", self.sink)):
            assert proc is not None and proc.poll() is None, (
                f"the {name} exited with {proc.returncode if proc else None}; logs in {self.logs}"
            )
        for proc in self.others:
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"

    def alive_and(self, check: Callable[[], bool]) -> bool:
        self.check_alive()
        return check()

    def stop(self) -> None:
        for proc in (self.worker, self.sink, *self.others):
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a paused process must hear the stop
            stop_process(proc)


def group_lag(cfg: Settings, group: str, topics: list[str]) -> int:
    """Messages of *topics* not yet committed by consumer *group* (a missing commit
    counts from the log start)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**cfg.kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p)
            for t in topics
            if t in meta.topics
            for p in meta.topics[t].partitions
        ]
        lag = 0
        for tp in consumer.committed(parts, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lag
    finally:
        consumer.close()


def committed_offsets(cfg: Settings, group: str, topics: list[str]) -> list[int]:
    """The offsets *group* committed on every partition of *topics* (negative: none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**cfg.kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
        return [tp.offset for tp in consumer.committed(parts, timeout=10)]
    finally:
        consumer.close()


def quiescent(cfg: Settings, sink: bool = True) -> bool:
    """The worker (and the sink) have committed everything there is to read."""
    topics = Topics.from_settings(cfg)
    engine_inputs = [
        topics.touchpoints.name,
        topics.identity_links.name,
        topics.person_touchpoints.name,
        topics.closed_paths.name,
    ]
    sink_inputs = [
        topics.person_touchpoints.name,
        topics.identity_changes.name,
        topics.journeys.name,
        topics.attribution.name,
        topics.attribution_models.name,
        topics.dead_letters.name,
    ]
    return group_lag(cfg, engine_group(cfg), engine_inputs) == 0 and (
        not sink or group_lag(cfg, SINK_GROUP, sink_inputs) == 0
    )


def settled(
    check: Callable[[], bool],
    cfg: Settings,
    timeout: float,
    what: str,
    alive: Callable[[], None] = lambda: None,
    sink: bool = True,
) -> None:
    """*check* holds and nothing is left to consume, twice in a row a few seconds apart
    (each stage commits on its own, so a single look could come between two stages).
    *alive* raises as soon as a process it watches has died."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        alive()
        if check() and quiescent(cfg, sink):
            streak += 1
            if streak >= 2:
                return
            time.sleep(3.0)
            continue
        streak = 0
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def replay_sample(cfg: Settings, files: tuple[Path, ...], rate: float | None = None) -> ReplayStats:
    """Publish *files* side by side in event time (each by the source its name says)."""
    publisher = Publisher(cfg, AvroSerde.from_dir(cfg.schemas_dir))
    stats = replay_files(
        list(files),
        [get_source(source_of_file(path, SOURCES)) for path in files],
        publisher.touchpoint,
        lambda rej: publisher.rejected(rej, "replay"),
        rate=rate,
    )
    publisher.flush()
    return stats


@contextlib.contextmanager
def replaying(
    cfg: Settings, files: tuple[Path, ...], rate: float | None
) -> Iterator[tuple[threading.Thread, list[ReplayStats]]]:
    """Replay *files* in a thread (at *rate* events/s), so faults can hit it mid-way."""
    out: list[ReplayStats] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(replay_sample(cfg, files, rate))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="replay", daemon=True)
    thread.start()
    try:
        yield thread, out
    finally:
        thread.join(timeout=120)
        if errors:
            raise AssertionError("the replay failed") from errors[0]


def isolated(cfg: Settings, tmp: Path, name: str) -> Settings:
    """*cfg* with its own topics, chDB path, worker state and consumer group."""
    prefix = f"{cfg.topic_prefix}{name}"
    return cfg.model_copy(
        update={
            "topic_prefix": prefix,
            "clickhouse_url": f"chdb://{tmp / name / 'clickhouse'}",
            "data_dir": tmp / name / "worker",
            "worker_id": f"{prefix}-worker",
            "model_refit_every": 20,
        }
    )


def base_settings(broker: str, tmp: Path, tag: str) -> Settings:
    """Settings every isolated run of a module derives from (:func:`isolated`)."""
    return Settings(
        kafka_bootstrap=broker,
        clickhouse_url=f"chdb://{tmp / 'unused'}",
        topic_prefix=tag + format(os.getpid() % 10**6, "06d"),
        partitions=4,
        data_dir=tmp / "unused-worker",
        sink_flush_ms=100,
    )


def expected_counts(stats: ReplayStats, stack: Stack) -> Callable[[], bool]:
    def check() -> bool:
        return (
            stack.count("touchpoints") >= stats.touchpoints
            and stack.count("dead_letters") >= stats.rejected
        )

    return check


# ---- the answers ----------------------------------------------------------------------

TOUCHPOINTS = """
SELECT count(), uniqExact(event_id),
       sum(cityHash64(event_id, source_event_id, channel, event_type, toString(revenue)))
FROM {db}.touchpoints FINAL
"""
# Every converted journey with its content (not its version, which counts revisions).
CONVERTED = """
SELECT journey_id, person_id, conversion_event_id, toUnixTimestamp64Milli(started_at),
       toUnixTimestamp64Milli(ended_at), round(revenue, 4), arrayStringConcat(path, '>'),
       arrayStringConcat(touch_event_ids, ',')
FROM {db}.journeys FINAL WHERE converted AND NOT is_deleted ORDER BY journey_id
"""
# Null paths are emitted once the partition's newest event time passes their idle
# deadline: near the end of the sample that depends on which events a partition has
# seen, so only those that ended well before the inactivity window are compared.
NULL_PATHS = """
SELECT journey_id, person_id, arrayStringConcat(path, '>'),
       arrayStringConcat(touch_event_ids, ',')
FROM {db}.journeys FINAL
WHERE NOT converted AND NOT is_deleted
  AND ended_at < (SELECT max(occurred_at) - INTERVAL 32 DAY FROM {db}.touchpoints FINAL)
ORDER BY journey_id
"""
CREDIT_PER_MODEL = """
SELECT model, uniqExact(conversion_event_id), round(sum(toDecimal128(credit, 12)), 6),
       round(sum(toDecimal128(revenue_credit, 12)), 4)
FROM {db}.attribution_current GROUP BY model ORDER BY model
"""
# Markov and Shapley credit each conversion with the snapshot the journey stage holds at
# that moment, so how they split across channels depends on timing even without faults;
# per channel, the rule-based models are compared (per model, all of them above).
# Each credit is summed as a decimal: a float sum depends on the order of its rows
# (4532.9247 against 4532.9248), a decimal sum of the same values does not.
CREDIT_PER_CHANNEL = """
SELECT model, channel, round(sum(toDecimal128(credit, 12)), 6),
       round(sum(toDecimal128(revenue_credit, 12)), 4)
FROM {db}.attribution_current WHERE model IN ({models})
GROUP BY model, channel ORDER BY model, channel
"""
IDENTITIES = """
SELECT identifier_type, identifier_value, person_id FROM {db}.identities FINAL
WHERE NOT is_deleted ORDER BY identifier_type, identifier_value
"""
DEAD_LETTERS = """
SELECT stage, count(), uniqExact(dead_letter_id) FROM {db}.dead_letters FINAL
GROUP BY stage ORDER BY stage
"""
JOURNEY_DEAD = """
SELECT error FROM {db}.dead_letters FINAL WHERE stage = 'journey' ORDER BY error LIMIT 20
"""
Rows = tuple[tuple[str, ...], ...]
#: What :meth:`Answers.differences` compares; the journey stage's own answers first.
JOURNEY_KINDS = (
    "touchpoints",
    "dead_letters",
    "converted",
    "null_paths",
    "credit_per_model",
    "credit_per_channel",
)
KINDS = (*JOURNEY_KINDS, "identities")


@dataclass(frozen=True)
class Answers:
    """What a run leaves in ClickHouse that must not depend on order or faults."""

    touchpoints: tuple[str, ...]
    converted: Rows
    null_paths: Rows
    credit_per_model: Rows
    credit_per_channel: Rows
    identities: Rows
    dead_letters: dict[str, int]
    journey_dead: tuple[str, ...]

    def figures(self) -> dict[str, Any]:
        """The headline figures of a run, for the report."""
        return {
            "touchpoints": int(self.touchpoints[0]),
            "converted_journeys": len(self.converted),
            "null_paths_compared": len(self.null_paths),
            "credited_conversions_per_model": {r[0]: int(r[1]) for r in self.credit_per_model},
            "revenue_credit_per_model": {r[0]: float(r[3]) for r in self.credit_per_model},
            "linear_credit_per_channel": {
                r[1]: float(r[2]) for r in self.credit_per_channel if r[0] == "linear"
            },
            "identities": len(self.identities),
            "persons": len({r[2] for r in self.identities}),
            "dead_letters_by_stage": self.dead_letters,
        }

    def differences(self, other: Answers, kinds: tuple[str, ...] = KINDS) -> list[str]:
        """What differs from *other* (the undisturbed run) among *kinds*, one line per
        kind; empty when the answers agree. Rows are compared exactly; the SQL rounds
        floats."""
        out: list[str] = []
        for name in kinds:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if name == "touchpoints":
                out.append(f"touchpoints {mine} != {theirs}")
                continue
            extra, missing = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            out.append(
                f"{name}: {len(mine)} rows vs {len(theirs)}; {len(extra)} not in the reference "
                f"(e.g. {extra[:3]}), {len(missing)} missing (e.g. {missing[:3]})"
            )
        ingest = {k: v for k, v in self.dead_letters.items() if k != "journey"}
        ref_ingest = {k: v for k, v in other.dead_letters.items() if k != "journey"}
        if "dead_letters" in kinds and ingest != ref_ingest:
            out.append(f"dead letters {ingest} != {ref_ingest}")
        return out


Query = Callable[[str], list[list[str]]]


def answers(query: Query, db: str) -> Answers:
    def rows(sql: str) -> Rows:
        return tuple(tuple(r) for r in query(sql))

    models = ", ".join(f"'{m}'" for m in RULE_MODELS)
    dead = {r[0]: int(r[1]) for r in query(DEAD_LETTERS.format(db=db))}
    return Answers(
        touchpoints=tuple(query(TOUCHPOINTS.format(db=db))[0]),
        converted=rows(CONVERTED.format(db=db)),
        null_paths=rows(NULL_PATHS.format(db=db)),
        credit_per_model=rows(CREDIT_PER_MODEL.format(db=db)),
        credit_per_channel=rows(CREDIT_PER_CHANNEL.format(db=db, models=models)),
        identities=rows(IDENTITIES.format(db=db)),
        dead_letters=dead,
        journey_dead=tuple(r[0] for r in query(JOURNEY_DEAD.format(db=db))),
    )


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Append one run's figures to ``$JOURNEYS_TEST_LOGS/guarantee-figures.jsonl`` (the
    calm, late and faulty runs side by side for the report) and print them."""
    log_dir = Path(os.environ.get("JOURNEYS_TEST_LOGS", "/tmp/journeys-test-logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"run": name, **figures}, sort_keys=True)
    with (log_dir / "guarantee-figures.jsonl").open("a") as f:
        f.write(line + "\n")
    print(line)


# ---- the undisturbed run --------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The sample and the answers an undisturbed stack stores for it."""

    base: Settings
    files: tuple[Path, ...]
    gen: GenStats
    stats: ReplayStats
    answers: Answers


def calm_run(base: Settings, tmp: Path, data: Sample, name: str = "calm") -> Reference:
    """The sample replayed at full speed through a stack nothing disturbs (the sink a
    ``journeys sink`` child process too, read through its query endpoint)."""
    cfg = isolated(base, tmp, name)
    ensure_topics(cfg)
    calm = Stack(cfg, tmp / name)
    try:
        calm.start_sink()
        calm.start_worker()
        with replaying(cfg, data.files, rate=None) as (_, done):
            pass
        stats = done[0]
        assert stats.touchpoints > 0
        assert stats.rejected == sum(data.gen.malformed_by_file.values()) > 0
        settled(expected_counts(stats, calm), cfg, 180, "the undisturbed run", calm.check_alive)
        result = answers(calm.query, cfg.clickhouse_database)
    finally:
        calm.stop()
    # events in = stored + dead letters
    assert int(result.touchpoints[0]) == stats.touchpoints
    assert result.dead_letters.get("replay", 0) == stats.rejected
    assert {r[0] for r in result.credit_per_model} == set(MODELS)
    assert len(result.converted) > 20
    # Every event of the sample is within the lookback of its person's newest one.
    assert "journey" not in result.dead_letters, result.journey_dead
    return Reference(base, data.files, data.gen, stats, result)
