"""The single-machine default survives a restart: `journeys run` on the persistent embedded
broker, stopped (Ctrl-C, kill -9 of everything, kill -9 of the broker alone) and started
again, gives the answers of a calm run. Each test starts `journeys run` as a user does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.stack import child_env
from connectors.base import Rejected
from connectors.generate import generate
from connectors.publisher import Publisher
from connectors.registry import SOURCES, get_source
from connectors.replay import replay_files, source_of_file
from pipeline.broker import free_port, kafka_answers
from pipeline.core.model import Touchpoint
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from sinks.clickhouse import SinkError
from sinks.query_server import find_owner, remote_query

DB = "journeys"
RULE_MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
CREDIT = (
    # Summed as decimals, so the order of the rows cannot change the last digit.
    "SELECT model, channel, round(sum(toDecimal128(credit, 12)), 6) "
    "FROM {db}.attribution_current "
    "GROUP BY model, channel ORDER BY model, channel FORMAT JSONCompactEachRow"
)


# -- a `journeys run` in a subprocess -------------------------------------------------


def stack_config(root: Path, bootstrap: str) -> Settings:
    """One partition: with more, which of two persons survives a merge can depend on the
    timing between partitions, and two calm runs may already group identities apart."""
    return Settings(
        kafka_bootstrap=bootstrap,
        broker_storage="s3",
        broker_dir=root / "broker",
        log_dir=root / "log",
        clickhouse_url=f"chdb://{root / 'clickhouse'}",
        data_dir=root / "worker",
        partitions=1,
        worker_id="restart-worker",
        sink_flush_ms=100,
        model_refit_every=5,
    )


@dataclass
class Stack:
    """One `journeys run` process (its own session) with the collector on *port*."""

    cfg: Settings
    port: int
    proc: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def descendants(self) -> list[int]:
        """Pids of every process below `journeys run` (its children run in sessions of
        their own, so its process group is not all of them)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            kids = [child for child, parent in parents.items() if parent == pid]
            found += kids
            frontier += kids
        return found

    def named(self, *names: str) -> list[int]:
        """Pids of the processes below `journeys run` whose command line has one of *names*."""
        pids = []
        for pid in self.descendants():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if any(name.encode() in cmdline for name in names):
                pids.append(pid)
        return pids

    def query(self, sql: str) -> str:
        port = find_owner(self.cfg.clickhouse_url)
        assert port is not None, "the stack's sink does not serve queries"
        return remote_query(port, sql.format(db=DB)).decode()

    def scalar(self, sql: str) -> int:
        return int(self.query(sql + " FORMAT TSV").strip() or 0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill_all()
        assert not self.descendants_alive(), "a child of `journeys run` outlived it"

    def kill_all(self) -> None:
        """kill -9 of `journeys run` and every process below it, at once."""
        pids = [*self.descendants(), self.proc.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self.proc.wait(timeout=10)

    def descendants_alive(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.descendants():
                return False
            time.sleep(0.1)
        return True


def start_stack(cfg: Settings, root: Path, expect_running: bool = True) -> Stack:
    port = free_port()
    env = {**child_env(cfg), "JOURNEYS_COLLECTOR_PORT": str(port)}
    output = root / f"run-{time.monotonic_ns()}.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "cli.main", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(cfg, port, proc, output)
    if not expect_running:
        return stack
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"journeys run exited:\n{stack.text()}"
        if "Journeys is running" in stack.text() and _healthy(port):
            return stack
        time.sleep(0.3)
    stack.kill_all()
    raise AssertionError(f"journeys run did not start within 60s:\n{stack.text()}")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert stack.proc.poll() is None, f"journeys run exited:\n{stack.text()}"
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{stack.text()}")


def settled(stack: Stack, quiet_s: float = 4.0, timeout: float = 60.0) -> None:
    """Wait until the attribution, journeys and identities in ClickHouse stop changing."""
    sql = (
        "SELECT (SELECT count() FROM {db}.attribution) + (SELECT count() FROM {db}.journeys)"
        " + (SELECT count() FROM {db}.identities)"
    )
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = stack.scalar(sql)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"the results did not settle within {timeout:.0f}s")


# -- the restart scenario through the collector ---------------------------------------


def post(port: int, body: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}/v1/track",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Basic ZGV2Og=="},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        assert resp.status == 200


def track(
    event: str,
    at: str,
    device: str,
    source: str,
    medium: str,
    user: str = "restart-customer",
    **props: object,
) -> dict[str, object]:
    return {
        "type": "track",
        "event": event,
        "userId": user,
        "anonymousId": device,
        "messageId": f"{device}-{event}-{at}",
        "timestamp": at,
        "context": {"campaign": {"source": source, "medium": medium, "name": "spring"}},
        "properties": props,
    }


def test_a_restart_between_two_visits_keeps_the_journey(tmp_path: Path) -> None:
    """The issue's story: paid search and add-to-cart, Ctrl-C, start again, two days later
    an e-mail and an order on another device. Without persistence the second run starts
    from nothing and credits e-mail alone."""
    # The later visit of someone else (on the one partition) moves the journey stage's
    # event-time watermark past the order, which closes the journey.
    cfg = stack_config(tmp_path, f"127.0.0.1:{free_port()}")
    stack = start_stack(cfg, tmp_path)
    try:
        post(stack.port, track("Product Added", "2026-03-02T10:00:00Z", "laptop", "google", "cpc"))
        wait_for(
            lambda: stack.scalar("SELECT count() FROM {db}.touchpoints FINAL") == 1,
            60,
            "the first touchpoint in ClickHouse",
            stack,
        )
    finally:
        stack.stop()
    stack = start_stack(cfg, tmp_path)
    try:
        post(
            stack.port,
            track(
                "Order Completed",
                "2026-03-04T18:00:00Z",
                "phone",
                "newsletter",
                "email",
                order_id="o-1",
                revenue=80.0,
            ),
        )
        later = track("Product Viewed", "2026-03-05T12:00:00Z", "tv", "google", "cpc", "other")
        post(stack.port, later)
        wait_for(
            lambda: stack.scalar("SELECT count() FROM {db}.journeys FINAL WHERE converted") == 1,
            60,
            "the converted journey",
            stack,
        )
        # The order may be credited first with e-mail alone (its device not yet merged)
        # and again once the merge arrives: wait for the newest credits to land too.
        wait_for(
            lambda: (
                stack.scalar(
                    "SELECT count() FROM {db}.attribution_current "
                    "WHERE model = 'first_touch' AND channel = 'paid_search'"
                )
                == 1
            ),
            60,
            "the credits of the merged journey",
            stack,
        )
        settled(stack, quiet_s=2.0)
        path = stack.query("SELECT path FROM {db}.journeys FINAL WHERE converted FORMAT TSV")
        credits = {
            (model, channel): credit
            for model, channel, credit in map(json.loads, stack.query(CREDIT).splitlines())
        }
    finally:
        stack.stop()
    assert path.strip() == "['paid_search','email']"
    assert credits[("first_touch", "paid_search")] == 1.0
    assert credits[("last_touch", "email")] == 1.0
    assert credits[("linear", "paid_search")] == credits[("linear", "email")] == 0.5
    assert ("first_touch", "email") not in credits or credits[("first_touch", "email")] == 0


# -- a replay interrupted by kill -9 ---------------------------------------------------


@dataclass
class Sample:
    touchpoints: list[Touchpoint]
    rejected: list[Rejected]

    @property
    def events_in(self) -> int:
        return len(self.touchpoints) + len(self.rejected)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    out = tmp_path_factory.mktemp("sample")
    gen = generate(out, people=40, days=6, seed=15)
    files = [out / name for name in gen.files]
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejected] = []
    replay_files(
        files,
        [get_source(source_of_file(path, SOURCES)) for path in files],
        touchpoints.append,
        rejected.append,
    )
    assert touchpoints and rejected
    return Sample(touchpoints, rejected)


def publish(cfg: Settings, sample: Sample, part: slice) -> None:
    """Publish a slice of the sample (its dead letters with the first part); returns when
    the broker acknowledged every message."""
    publisher = Publisher(cfg, AvroSerde.from_dir(cfg.schemas_dir))
    for tp in sample.touchpoints[part]:
        publisher.touchpoint(tp)
    if part.start in (None, 0):
        for rej in sample.rejected:
            publisher.rejected(rej, "replay")
    publisher.flush(timeout=120)


@dataclass(frozen=True)
class Figures:
    touchpoints: int
    dead_letters: int
    converted: int
    identities: int
    persons: int
    credit: dict[tuple[str, str], float]
    totals: dict[str, float]


def figures(stack: Stack, sample: Sample) -> Figures:
    wait_for(
        lambda: (
            stack.scalar("SELECT count() FROM {db}.touchpoints FINAL") >= len(sample.touchpoints)
            and stack.scalar("SELECT count() FROM {db}.dead_letters FINAL WHERE stage='replay'")
            >= len(sample.rejected)
        ),
        90,
        "every event in ClickHouse",
        stack,
    )
    settled(stack)
    rows = [json.loads(line) for line in stack.query(CREDIT).splitlines()]
    totals: dict[str, float] = {}
    for model, _channel, credit in rows:
        totals[model] = round(totals.get(model, 0.0) + credit, 3)
    return Figures(
        touchpoints=stack.scalar("SELECT count() FROM {db}.touchpoints FINAL"),
        dead_letters=stack.scalar(
            "SELECT count() FROM {db}.dead_letters FINAL WHERE stage = 'replay'"
        ),
        converted=stack.scalar("SELECT count() FROM {db}.journeys FINAL WHERE converted"),
        identities=stack.scalar("SELECT count() FROM {db}.identities FINAL WHERE NOT is_deleted"),
        persons=stack.scalar(
            "SELECT uniqExact(person_id) FROM {db}.identities FINAL WHERE NOT is_deleted"
        ),
        credit={(m, c): round(v, 3) for m, c, v in rows if m in RULE_MODELS},
        totals=totals,
    )


@pytest.fixture(scope="module")
def calm(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    """The figures of the sample replayed without any interruption."""
    root = tmp_path_factory.mktemp("calm")
    cfg = stack_config(root, f"127.0.0.1:{free_port()}")
    stack = start_stack(cfg, root)
    try:
        publish(cfg, sample, slice(0, None))
        result = figures(stack, sample)
    finally:
        stack.stop()
    return result


def side_by_side(calm: Figures, result: Figures, title: str) -> str:
    """The calm and the restarted figures as a small table (shown with ``pytest -s``)."""
    rows = [
        (name, getattr(calm, name), getattr(result, name))
        for name in ("touchpoints", "dead_letters", "converted", "identities", "persons")
    ]
    rows += [(f"credit {m}", calm.totals[m], result.totals.get(m)) for m in sorted(calm.totals)]
    top = sorted(calm.credit, key=lambda k: -calm.credit[k])[:3]
    rows += [(f"{m} {c}", calm.credit[(m, c)], result.credit.get((m, c))) for m, c in top]
    lines = [f"{title}", f"{'':28}{'calm':>10}{'restarted':>12}"]
    lines += [f"{name:28}{a!s:>10}{b!s:>12}" for name, a, b in rows]
    return "\n".join(lines)


def check_like_calm(result: Figures, calm: Figures, sample: Sample) -> None:
    assert result.touchpoints + result.dead_letters == sample.events_in
    assert (result.touchpoints, result.dead_letters) == (calm.touchpoints, calm.dead_letters)
    assert result.converted == calm.converted
    assert (result.identities, result.persons) == (calm.identities, calm.persons)
    assert result.credit == calm.credit
    # Markov and Shapley credit depends on when snapshots arrive; every conversion is
    # still credited once in full by every model.
    assert result.totals.keys() == calm.totals.keys()
    for model, total in result.totals.items():
        assert total == pytest.approx(calm.totals[model], abs=0.01), model


def test_kill_9_of_the_whole_stack_mid_replay_then_restart(
    sample: Sample, calm: Figures, tmp_path: Path
) -> None:
    cfg = stack_config(tmp_path, f"127.0.0.1:{free_port()}")
    half = len(sample.touchpoints) // 2
    stack = start_stack(cfg, tmp_path)
    try:
        publish(cfg, sample, slice(0, half))
        time.sleep(1.0)  # the worker is in the middle of the first half
    finally:
        stack.kill_all()
    assert not stack.descendants_alive()
    stack = start_stack(cfg, tmp_path)
    try:
        publish(cfg, sample, slice(half, None))
        result = figures(stack, sample)
    finally:
        stack.stop()
    print(side_by_side(calm, result, "kill -9 of the whole stack mid-replay"))
    check_like_calm(result, calm, sample)


def restarted(stack: Stack, root: Path) -> Stack:
    """A new `journeys run` after *stack* stopped with the clear message."""
    text = " ".join(stack.text().split())
    assert "Start `journeys run` again: acknowledged events are kept" in text, text
    return start_stack(stack.cfg, root)


def test_kill_9_of_the_broker_alone_mid_replay(
    sample: Sample, calm: Figures, tmp_path: Path
) -> None:
    """The broker's processes (Tansu and its S3 endpoint) die; `journeys run`
    restarts them, or stops with a clear message and a restart completes the run."""
    cfg = stack_config(tmp_path, f"127.0.0.1:{free_port()}")
    half = len(sample.touchpoints) // 2
    stack = start_stack(cfg, tmp_path)
    try:
        publish(cfg, sample, slice(0, half))
        broker = stack.named("tansu", "pipeline.s3files")
        assert len(broker) == 2, stack.descendants()
        for pid in broker:
            os.kill(pid, signal.SIGKILL)
        # The rest once the broker answers again: the replay's producer is not idempotent
        # (connectors/publisher.py), so its retries while the broker is down could reorder
        # a partition, which changes identity decisions (as it would on Apache Kafka).
        deadline = time.monotonic() + 30
        while not kafka_answers(cfg.kafka_bootstrap) and stack.proc.poll() is None:
            assert time.monotonic() < deadline, stack.text()
            time.sleep(0.2)
        if stack.proc.poll() is not None:
            stack = restarted(stack, tmp_path)
        publish(cfg, sample, slice(half, None))
        try:
            result = figures(stack, sample)
        except (AssertionError, SinkError):
            stack.proc.wait(timeout=30)
            stack = restarted(stack, tmp_path)
            result = figures(stack, sample)
    finally:
        stack.stop()
    how = "restarted by journeys run" if "restarting it" in stack.text() else "journeys run again"
    print(side_by_side(calm, result, f"kill -9 of the broker alone mid-replay ({how})"))
    check_like_calm(result, calm, sample)


def test_a_deleted_broker_folder_with_worker_state_stops_with_a_clear_message(
    sample: Sample, tmp_path: Path
) -> None:
    cfg = stack_config(tmp_path, f"127.0.0.1:{free_port()}")
    stack = start_stack(cfg, tmp_path)
    try:
        publish(cfg, sample, slice(0, 50))
        wait_for(
            lambda: stack.scalar("SELECT count() FROM {db}.touchpoints FINAL") >= 50,
            60,
            "the first touchpoints",
            stack,
        )
    finally:
        stack.stop()
    state = sorted(p.relative_to(cfg.data_dir) for p in cfg.data_dir.rglob("*"))
    shutil.rmtree(cfg.broker_dir)
    stack = start_stack(cfg, tmp_path, expect_running=False)
    try:
        code = stack.proc.wait(timeout=60)
    finally:
        stack.stop()
    text = " ".join(stack.text().split())
    assert code == 1, text
    assert "the broker's data is gone" in text
    assert "journeys reset" in text
    # Nothing was mixed: the state is as it was, and no worker ran on the new broker.
    assert sorted(p.relative_to(cfg.data_dir) for p in cfg.data_dir.rglob("*")) == state
