"""The whole pipeline end to end: produce, Faust worker(s), ClickHouse sink.

A fresh broker and chDB path; ``journeys worker`` processes started with
:func:`cli.stack.spawn` (each with its own ``JOURNEYS_DATA_DIR``); the sink
(:class:`cli.stack.SinkService`) in this process, its ClickHouse client wrapped so
that the moment each ``touchpoints`` row became visible (the insert returned) is
recorded. Product defaults otherwise (8 partitions, sink batches of 5,000 / 250 ms).

1. **Warm-up.** Wait until the consumer group has every worker, then send a few
   thousand touchpoints and wait until ClickHouse shows them: the group has joined and
   every stage is running.
2. **Throughput.** Produce N more touchpoints as fast as the producer goes and time
   from the first produce to the moment the last of them is visible in
   ``touchpoints``. ``all_stages`` also waits for the other tables (``identity_merges``,
   ``identities``, ``journeys``, ``attribution``, ``attribution_models``) to go quiet.
3. **Latency.** Produce at a steady, moderate rate with each event's produce time
   recorded, and compare with the moment its row became visible.
4. **Conversion to credit** (``--credit-rate``): during the latency run, and then alone
   as a trickle of 1 event/s (``--trickle-seconds``), customers' page views and orders go
   through a ``journeys collect`` process; from the collector's answer to an order to
   the insert of its credit (:mod:`bench.credit_latency`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    PRODUCER_CONF,
    QUIET_CLIENT,
    WORK,
    BenchError,
    EventSet,
    bench_settings,
    fragment_main,
    fresh_broker,
    produce,
    settings_env,
)
from bench.credit_latency import CreditClock, send_conversions
from bench.data import plan
from sinks.clickhouse import LockedClient

QUIET_S = 3.0


class RecordingClient(LockedClient):
    """The sink's client, recording when rows became visible (the insert returned)."""

    def __init__(self, inner: LockedClient) -> None:
        super().__init__(inner.client, inner.url)
        self.lock = inner.lock
        self.visible: dict[str, float] = {}
        self.rows: Counter[str] = Counter()
        self.last_insert = 0.0
        self.changed = threading.Condition()
        self.credit = CreditClock()

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        database: str,
        token: str | None = None,
    ) -> None:
        super().insert(table, rows, columns, database, token)
        at = time.monotonic()
        with self.changed:
            if table == "touchpoints":
                for row in rows:
                    self.visible.setdefault(str(row[0]), at)
            elif table == "attribution":
                self.credit.inserted(rows, columns, at)
            self.rows[table] += len(rows)
            self.last_insert = at
            self.changed.notify_all()

    def wait_visible(
        self, count: int, timeout: float, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.visible) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"{len(self.visible)} of {count} touchpoints visible after {timeout:.0f} s"
                    )
                dead = [p.returncode for p in procs if p.poll() is not None]
                if dead:
                    raise BenchError(f"a worker exited with {dead[0]}")
                self.changed.wait(min(left, 1.0))

    def wait_credited(self, accepted: dict[str, float], timeout: float) -> dict[str, float]:
        """Wait until every conversion of *accepted* has its credit in ClickHouse; the
        seconds from acceptance to credit of each (those still missing are left out)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while time.monotonic() < deadline:
                if all(cid in self.credit.visible for cid in accepted):
                    break
                self.changed.wait(0.5)
        return {
            cid: self.credit.visible[cid] - at
            for cid, at in accepted.items()
            if cid in self.credit.visible
        }

    def wait_quiet(self, quiet_s: float, timeout: float) -> float:
        """Wait until no insert happened for *quiet_s*; the time of the last insert."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.changed:
                last = self.last_insert
            if time.monotonic() - last >= quiet_s:
                return last
            time.sleep(0.2)
        return self.last_insert


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Children started inside write their stdout and stderr to *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of *pid* so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _produce_steady(bootstrap: str, topic: str, events: EventSet, rate: float) -> dict[str, float]:
    """Produce at *rate* events/s; the monotonic produce time of each event id."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF, **QUIET_CLIENT})
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, (key, value, eid) in enumerate(
        zip(events.keys, events.values, events.event_ids, strict=True)
    ):
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        sent[eid] = time.monotonic()
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    if producer.flush(60):
        raise BenchError("latency run: messages unacknowledged")
    return sent


def _credit_stats(accepted: dict[str, float], seconds: dict[str, float]) -> dict[str, Any]:
    lat = list(seconds.values())
    out: dict[str, Any] = {"conversions": len(accepted), "credited": len(lat)}
    if lat:
        out |= {
            "p50_s": round(_percentile(lat, 0.50), 3),
            "p99_s": round(_percentile(lat, 0.99), 3),
            "max_s": round(max(lat), 3),
        }
    if len(lat) < len(accepted):
        out["p99_s"] = None  # a conversion never credited: no percentile stands for it
    return out


def _start_collector(cfg: Any, port: int) -> subprocess.Popen[bytes]:
    """``journeys collect`` on *port*, once it answers its health check."""
    import urllib.request

    from cli.stack import spawn

    proc = spawn(["collect"], env=settings_env(cfg, JOURNEYS_COLLECTOR_PORT=str(port)))
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise BenchError(f"the collector exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # noqa: S310
                return proc
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError("the collector did not answer in 60 s") from None
            time.sleep(0.2)


def _py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample *pid* with py-spy (raw folded stacks) when it is installed."""
    import shutil
    import sys

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [
            exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "50", "--format", "raw", "--output", str(out), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def measure(
    workers: int,
    events_n: int,
    warm_n: int,
    latency_load: float,
    latency_seconds: float,
    profile_seconds: float,
    credit_rate: float = 0.0,
    trickle_seconds: float = 0.0,
) -> dict[str, Any]:
    from cli.stack import SinkService, spawn, stop_process
    from pipeline.broker import free_port
    from pipeline.topics import Topics, ensure_topics

    cut = plan(events_n, warm_n)
    warm, main = cut.warm, cut.main
    name = f"e2e{workers}"
    result: dict[str, Any] = {"workers": workers, "events": events_n, "warm_up_events": warm_n}
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        fresh_broker(name) as boot,
    ):
        root = Path(tmp)
        cfg = bench_settings(boot, root, name)
        topics = Topics.from_settings(cfg)
        ensure_topics(cfg, topics)
        topic = topics.touchpoints.name
        service = SinkService(cfg, serve_queries=False)
        recorder = RecordingClient(service.client)
        service.sink.client = recorder
        service.start()
        procs: list[subprocess.Popen[bytes]] = []
        spy: subprocess.Popen[bytes] | None = None
        collector: subprocess.Popen[bytes] | None = None
        collected = 0
        try:
            with _output_to(WORK / "logs" / f"{name}-workers.log"):
                for i in range(workers):
                    env = settings_env(cfg, JOURNEYS_DATA_DIR=str(root / f"worker-{i}"))
                    procs.append(spawn(["worker"], env=env))
                collector_port = free_port()
                if credit_rate > 0 or trickle_seconds > 0:
                    collector = _start_collector(cfg, collector_port)
            # Tansu describes groups without members, so the warm-up itself shows that
            # every worker has partitions: each must burn CPU on the second half.
            t0 = time.monotonic()
            half = len(warm) // 2
            produce(boot, topic, warm.slice(0, half))
            recorder.wait_visible(half, 180, procs)
            for attempt in range(4):
                recorder.wait_quiet(2.0, 30)
                cpu = [_cpu_seconds(p.pid) for p in procs]
                part = warm.slice(half, len(warm)) if attempt == 0 else warm.slice(0, half)
                produce(boot, topic, part)
                recorder.wait_visible(len(warm), 180, procs)
                recorder.wait_quiet(1.0, 30)
                used = [_cpu_seconds(p.pid) - c for p, c in zip(procs, cpu, strict=True)]
                if min(used) >= 0.2 * max(used):
                    break
                time.sleep(3.0)
            else:
                raise BenchError(f"a worker got no partitions: warm-up CPU seconds {used}")
            result["warm_up_s"] = round(time.monotonic() - t0, 2)
            result["warm_up_cpu_s_by_worker"] = [round(u, 2) for u in used]

            # -- throughput ----------------------------------------------------------
            before = Counter(recorder.rows)
            cpu = [_cpu_seconds(p.pid) for p in procs]
            cpu_self = time.process_time()
            if profile_seconds > 0:
                spy = _py_spy(procs[0].pid, profile_seconds, WORK / f"py-spy-{name}.txt")
            first = produce(boot, topic, main)
            produced = time.monotonic()
            recorder.wait_visible(len(warm) + len(main), 600, procs)
            last_visible = max(recorder.visible[e] for e in main.event_ids)
            seconds = last_visible - first
            last_any = recorder.wait_quiet(QUIET_S, 180)
            rows = {k: v - before.get(k, 0) for k, v in recorder.rows.items()}
            worker_cpu = [_cpu_seconds(p.pid) - c for p, c in zip(procs, cpu, strict=True)]
            result |= {
                "produce_seconds": round(produced - first, 3),
                "seconds": round(seconds, 3),
                "events_per_s": round(len(main) / seconds, 1),
                "events_per_s_per_worker": round(len(main) / seconds / workers, 1),
                "waited_on": "touchpoints",
                "all_stages_seconds": round(last_any - first, 3),
                "all_stages_events_per_s": round(len(main) / (last_any - first), 1),
                "all_stages_tables": sorted(rows),
                "rows_inserted": dict(sorted(rows.items())),
                "worker_rss_bytes": [_rss(p.pid) for p in procs],
                "worker_cpu_s": [round(c, 2) for c in worker_cpu],
                "events_per_worker_cpu_s": round(len(main) / max(sum(worker_cpu), 1e-9), 1),
                "sink_process_cpu_s": round(time.process_time() - cpu_self, 2),
            }
            if spy is not None:
                spy.wait(timeout=profile_seconds + 30)
                result["py_spy_profile"] = str(WORK / f"py-spy-{name}.txt")

            # -- latency -------------------------------------------------------------
            rate = max(50.0, round(latency_load * len(main) / seconds, -1))
            steady = cut.spare.slice(0, min(len(cut.spare), int(rate * latency_seconds)))
            if len(steady):
                orders: dict[str, float] = {}
                driver = threading.Thread(
                    target=lambda: orders.update(
                        send_conversions(collector_port, credit_rate, latency_seconds)
                    ),
                    name="conversions",
                    daemon=True,
                )
                if credit_rate > 0:
                    driver.start()
                sent = _produce_steady(boot, topic, steady, rate)
                if credit_rate > 0:
                    driver.join(timeout=latency_seconds + 60)
                    collected += 2 * len(orders)
                    result["conversion_to_credit_quarter_capacity"] = {
                        "background_events_per_s": rate,
                        "collector_events_per_s": credit_rate,
                        **_credit_stats(orders, recorder.wait_credited(orders, 60)),
                    }
                recorder.wait_visible(len(warm) + len(main) + len(steady), 180, procs)
                lat = [recorder.visible[e] - t for e, t in sent.items()]
                result["latency"] = {
                    "rate_events_per_s": rate,
                    "rate_share_of_throughput": round(rate / (len(main) / seconds), 2),
                    "events": len(lat),
                    "p50_s": round(_percentile(lat, 0.50), 3),
                    "p90_s": round(_percentile(lat, 0.90), 3),
                    "p99_s": round(_percentile(lat, 0.99), 3),
                    "max_s": round(max(lat), 3),
                    "measured_to": "the chDB insert of the row returned (row visible)",
                }
            if trickle_seconds > 0:
                # Nothing else flows: 1 event/s through the collector, a page view then
                # an order per customer.
                recorder.wait_quiet(2.0, 60)
                orders = send_conversions(collector_port, 1.0, trickle_seconds)
                collected += 2 * len(orders)
                result["conversion_to_credit_trickle"] = {
                    "collector_events_per_s": 1.0,
                    "seconds": trickle_seconds,
                    **_credit_stats(orders, recorder.wait_credited(orders, 60)),
                }
            db = cfg.clickhouse_database
            distinct: dict[str, int] = {}
            for table in ("journeys", "attribution", "identity_merges"):
                _, got = recorder.query_rows(f"SELECT count() FROM {db}.{table} FINAL")
                distinct[table] = int(got[0][0])
            result["rows_after_dedup_final"] = distinct
            _, got = recorder.query_rows(f"SELECT count() FROM {db}.touchpoints FINAL")
            result["touchpoints_in_clickhouse"] = int(got[0][0])
            sent_n = len(warm) + len(main) + len(steady) + collected
            if result["touchpoints_in_clickhouse"] != sent_n:
                raise BenchError(
                    f"ClickHouse holds {got[0][0]} touchpoints, {sent_n} were produced"
                )
        finally:
            if spy is not None and spy.poll() is None:
                spy.terminate()
            if collector is not None:
                stop_process(collector)
            for proc in procs:
                stop_process(proc)
            service.stop()
    return result


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--warm-up", type=int, default=2000)
    p.add_argument(
        "--latency-load", type=float, default=0.25, help="latency run's rate: share of throughput"
    )
    p.add_argument("--latency-seconds", type=float, default=15.0)
    p.add_argument("--profile-seconds", type=float, default=0.0)
    p.add_argument(
        "--credit-rate",
        type=float,
        default=0.0,
        help="collector events/s (page, order) during the latency run; 0: none",
    )
    p.add_argument(
        "--trickle-seconds", type=float, default=0.0, help="then 1 event/s alone; 0: none"
    )


def main() -> int:
    return fragment_main(
        __doc__ or "",
        _args,
        lambda a: measure(
            a.workers,
            a.events,
            a.warm_up,
            a.latency_load,
            a.latency_seconds,
            a.profile_seconds,
            a.credit_rate,
            a.trickle_seconds,
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
