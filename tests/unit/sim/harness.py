"""The deterministic simulation: the real engine, with the worker's stages wired by
:func:`pipeline.app.build_engine_stages`, on the in-memory broker of
:mod:`tests.unit.sim.broker`, fed a seeded event set, shuffled within a bounded
lateness, with duplicated deliveries, crashed at checkpoint steps and restarted from
what the broker holds (the local stores kept or wiped). Its :class:`Outcome` is what
ClickHouse would show with ``FINAL``: the latest version of each key.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.agents.engine import Engine
from pipeline.agents.output import OutputProducer
from pipeline.agents.snapshots import SnapshotPolicy, floors
from pipeline.app import build_engine_stages
from pipeline.core.attribution import DATA_DRIVEN_MODELS
from pipeline.core.model import Identifier, Touchpoint
from pipeline.rules import Rules, load_rules
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics
from tests.unit.sim.broker import SimBroker, SimClients, SimConsumer, SimProducer

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
#: The engine's checkpoint steps (``Engine.fault``), in order.
STEPS = ("changelogs", "flushed", "marking", "marked", "stored", "committed")


@cache
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


class SimCrash(Exception):
    """The worker process dies here."""


# -- events ------------------------------------------------------------------------------


def make_events(seed: int, persons: int = 6, count: int = 90) -> list[Touchpoint]:
    """Touchpoints of *persons* customers in event-time order: several devices each
    (anonymous ids), logins (user ids) and e-mail identifications that merge them,
    clicks and visits of several channels, and orders."""
    rng = random.Random(seed)
    people: list[dict[str, Any]] = [
        {
            "user": f"u-{seed}-{i}",
            "email": hashlib.sha256(f"{seed}-{i}@example.com".encode()).hexdigest(),
            "anons": [f"a-{seed}-{i}-{j}" for j in range(rng.randint(1, 3))],
        }
        for i in range(persons)
    ]
    at = T0
    events = []
    for n in range(count):
        at += timedelta(minutes=rng.choice([1, 4, 15, 40, 95, 300]))
        person = rng.choice(people)
        idents = [Identifier("anonymous_id", rng.choice(person["anons"]))]
        roll = rng.random()
        if roll < 0.3:
            idents.append(Identifier("user_id", person["user"]))
        elif roll < 0.45:
            idents.append(Identifier("email_sha256", person["email"]))
        kind = rng.random()
        revenue = None
        if kind < 0.12:
            event_type, channel, revenue = "order_completed", "direct", rng.choice([20.0, 55.5])
        elif kind < 0.3:
            event_type, channel = "email_click", "email"
        elif kind < 0.4:
            event_type, channel = "ad_click", "paid_search"
        else:
            event_type = "page"
            channel = rng.choice(["organic_search", "direct", "social", "paid_search"])
        events.append(
            Touchpoint(
                event_id=f"ev-{seed}-{n}",
                source="segment",
                source_event_id=None,
                occurred_at=at,
                received_at=at,
                channel=channel,
                event_type=event_type,
                identifiers=tuple(idents),
                revenue=revenue,
                currency="EUR" if revenue else None,
            )
        )
    return events


def arrival(
    events: list[Touchpoint], rng: random.Random, lateness: int = 0, duplicates: float = 0.0
) -> list[Touchpoint]:
    """*events* as delivered: each moved back by up to *lateness* places, and a share
    *duplicates* delivered twice (the second copy up to 10 places later)."""
    keyed = [(i + rng.uniform(0, lateness), tp) for i, tp in enumerate(events)]
    keyed += [
        (i + rng.uniform(0, 10), tp) for i, tp in enumerate(events) if rng.random() < duplicates
    ]
    return [tp for _k, tp in sorted(keyed, key=lambda kv: kv[0])]


# -- a worker process ----------------------------------------------------------------------


@dataclass
class Plan:
    """How a run is disturbed."""

    seed: int = 0
    #: (checkpoint number, step): the worker dies there (numbers count every checkpoint
    #: that had work, across restarts).
    crashes: set[tuple[int, str]] = field(default_factory=set)
    #: Wipe the local stores at each crash (a new machine) instead of keeping them.
    wipe: bool = False
    batch_size: int = 40
    #: Polls between two checkpoints.
    checkpoint_every: int = 3
    #: Events the collector publishes per poll.
    feed: int = 7
    #: A crash delivers a random prefix of each partition's unflushed messages (outputs
    #: then arrive twice after the restart); False: it loses them all.
    partial: bool = True
    #: The engine's snapshot threshold (0: none); at each crash the broker then deletes
    #: what the checkpoint logs' floors allow, as the persistent broker's janitor does.
    snapshot_min_records: int = 0
    #: Markers after which a table with no snapshot, or written since its last, gets one.
    snapshot_max_age: int = 10_000


class Worker:
    """One worker process: a real :class:`Engine` with the worker's stages."""

    def __init__(
        self, broker: SimBroker, settings: Settings, rules: Rules, plan: Plan, run: Run
    ) -> None:
        self.producer = SimProducer(broker)
        self.clients = SimClients(broker, random.Random(plan.seed * 7919 + run.restarts))
        self.engine = Engine(
            settings,
            OutputProducer({}, producer=self.producer),
            batch_size=plan.batch_size,
            commit_interval_s=float("inf"),
            clients=self.clients,
            align_wait_s=float("inf"),
        )
        build_engine_stages(self.engine, settings, serde(), Topics.from_settings(settings), rules)
        self.engine.snapshots = SnapshotPolicy(
            settings.snapshot_min_records, max_age=plan.snapshot_max_age
        )
        self.engine.fault = run.fault
        self.engine.start()

    @property
    def consumer(self) -> SimConsumer:
        consumer = self.engine._consumer
        assert isinstance(consumer, SimConsumer)
        return consumer

    def idle(self) -> bool:
        aligned = sum(a.count for a in self.engine._aligners.values())
        return bool(self.consumer.positions) and self.consumer.lag() == 0 and aligned == 0

    def crash(self, rng: random.Random, partial: bool = True) -> None:
        if partial:
            self.producer.crash(rng)
        else:
            self.producer.queue.clear()
        for consumer in self.clients.made:
            consumer.kill()
        for table in self.engine.tables.values():
            table.close_all()  # the process is gone: only what reached the disk stays


@dataclass
class Outcome:
    """What the output topics say, latest version per key (as ``FINAL`` would)."""

    identities: dict[tuple[str, str], str]
    journeys: dict[str, tuple[Any, ...]]
    credits: dict[str, tuple[Any, ...]]
    dead_letters: set[str]
    crashes: int = 0
    #: Records the emulated janitor deleted below the snapshots.
    cut: int = 0
    #: With snapshots: the settled tables, and those a scratch restore rebuilt after
    #: the janitor's last cut.
    state: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    restored: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: Whether the janitor cut the checkpoint log itself (every table had a snapshot).
    log_cut: bool = False


@dataclass
class Run:
    plan: Plan
    checkpoints: int = 0
    restarts: int = 0
    #: Records the emulated janitor deleted.
    cut: int = 0

    def fault(self, step: str) -> None:
        if step == STEPS[0]:
            self.checkpoints += 1
        if (self.checkpoints, step) in self.plan.crashes:
            raise SimCrash(f"checkpoint {self.checkpoints}, {step}")


def simulate(deliveries: list[Touchpoint], plan: Plan, root: Path) -> Outcome:
    """Publish *deliveries* in order through the collector, run the worker (crashing
    and restarting it as *plan* says) until everything is processed."""
    broker = SimBroker()
    settings = Settings(
        data_dir=root,
        worker_id="sim",
        topic_prefix="sim",
        partitions=3,
        model_refit_every=5,
        snapshot_min_records=plan.snapshot_min_records,
    )
    topics = Topics.from_settings(settings)
    for spec in topics.all():
        broker.create(spec.name, spec.partitions)
    rules = load_rules(None)
    rng = random.Random(plan.seed)
    run = Run(plan)
    collector = SimProducer(broker)
    encode = serde().encoder("Touchpoint")
    worker = Worker(broker, settings, rules, plan, run)
    fed = polls = 0
    settled: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(20_000):
        if fed < len(deliveries):
            for tp in deliveries[fed : fed + plan.feed]:
                collector.produce(topics.touchpoints.name, encode(tp.to_record()), tp.routing_key())
            collector.flush()
            fed = min(len(deliveries), fed + plan.feed)
        try:
            worker.engine.poll()
            polls += 1
            if polls % plan.checkpoint_every == 0:
                worker.engine.checkpoint()
            if fed == len(deliveries) and worker.idle():
                worker.engine.checkpoint()
                if worker.idle():
                    settled = table_state(worker.engine) if plan.snapshot_min_records else {}
                    worker.engine.close()  # may checkpoint a due snapshot: may crash too
                    break
        except SimCrash:
            worker.crash(rng, plan.partial)
            run.restarts += 1
            if plan.snapshot_min_records:
                run.cut += janitor(broker, worker.engine.checkpoint_log)
            if plan.wipe:
                shutil.rmtree(root / "engine", ignore_errors=True)
            worker = Worker(broker, settings, rules, plan, run)
    else:
        raise AssertionError("the simulation did not settle")
    result = outcome(broker, topics, run.restarts)
    result.cut = run.cut
    if plan.snapshot_min_records:
        # What a scratch restore from what the janitor leaves must rebuild.
        result.state = settled
        run.cut += janitor(broker, worker.engine.checkpoint_log)
        result.log_cut = any(topic == worker.engine.checkpoint_log for topic, _p in broker.low)
        shutil.rmtree(root / "engine", ignore_errors=True)
        run.plan = Plan(seed=plan.seed)  # no more crashes
        worker = Worker(broker, settings, rules, run.plan, run)
        for _ in range(100):
            worker.engine.poll()
            if worker.idle():
                break
        result.restored = table_state(worker.engine)
        worker.engine.close()
    return result


def table_state(engine: Engine) -> dict[tuple[str, int], dict[str, Any]]:
    """Every key and value of every table partition the engine holds."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for name, table in engine.tables.items():
        for p in range(table.partitions):
            if table.holds(p):
                table.partition = p
                out[(name, p)] = {key: table[key] for key in table}
    return out


def janitor(broker: SimBroker, checkpoint_log: str) -> int:
    """Cut every partition below the floors of the checkpoint log (what the persistent
    broker's janitor deletes); how many records that removed."""
    before = sum(broker.low.values())
    for partition, log in enumerate(broker.topics.get(checkpoint_log, [])):
        low = broker.low.get((checkpoint_log, partition), 0)
        held = [(m.offset(), m.key(), m.value()) for m in log[low:]]
        for key, floor in floors(held).items():
            topic, part = (checkpoint_log, partition) if key is None else key
            broker.cut(topic, part, floor)
    return sum(broker.low.values()) - before


def outcome(broker: SimBroker, topics: Topics, crashes: int) -> Outcome:
    decode = serde().decode
    identities: dict[tuple[str, str], str | None] = {}
    for msg in broker.messages(topics.identity_changes.name):
        value = msg.value()
        if value is None:
            continue
        rec = decode(value)
        if rec["kind"] == "REFUSED":
            continue
        for ident in rec.get("identifiers") or []:
            key = (ident["type"], ident["value"])
            identities[key] = None if rec["kind"] == "FORGET" else rec["person_id"]
    journeys: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for msg in broker.messages(topics.journeys.name):
        rec = decode(msg.value() or b"")
        version = int(rec.get("version") or 1)
        if version >= journeys.get(rec["journey_id"], (-1, ()))[0]:
            journeys[rec["journey_id"]] = (
                version,
                (
                    rec["person_id"],
                    rec["converted"],
                    rec.get("conversion_event_id"),
                    tuple(rec["path"]),
                    tuple(rec.get("touch_event_ids") or ()),
                    round(float(rec.get("revenue") or 0.0), 6),
                ),
            )
    credits: dict[str, tuple[int, list[tuple[Any, ...]]]] = {}
    for msg in broker.messages(topics.attribution.name):
        rec = decode(msg.value() or b"")
        if rec["model"] in DATA_DRIVEN_MODELS:
            continue  # their snapshot may depend on timing (issue 12)
        version = int(rec["version"])
        row = (rec["model"], rec["touch_position"], rec["channel"], round(rec["credit"], 9))
        have = credits.get(rec["conversion_event_id"])
        if have is None or version > have[0]:
            credits[rec["conversion_event_id"]] = (version, [row])
        elif version == have[0] and row not in have[1]:
            have[1].append(row)
    dead = {
        decode(m.value() or b"")["dead_letter_id"]
        for m in broker.messages(topics.dead_letters.name)
    }
    return Outcome(
        {k: v for k, v in identities.items() if v is not None},
        {k: v for k, (_version, v) in journeys.items()},
        {k: tuple(sorted(rows)) for k, (_version, rows) in credits.items()},
        dead,
        crashes,
    )
