"""No poison can crash-loop a worker (issue 12): the worker's real stages on the
in-memory broker are fed a corrupt journey state, corrupt model snapshots and a 2 MB
event. Each lands in dead letters with its reason, and the events after it are
processed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from pipeline.agents.output import DeadLetters
from pipeline.core.model import Touchpoint
from pipeline.rules import load_rules
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.unit.sim.broker import SimBroker, SimProducer
from tests.unit.sim.harness import Plan, Run, Worker, make_events, serde


def test_poison_becomes_dead_letters_and_the_worker_goes_on(tmp_path: Path) -> None:
    broker = SimBroker()
    settings = Settings(data_dir=tmp_path, worker_id="sim", topic_prefix="sim", partitions=3)
    topics = Topics.from_settings(settings)
    for spec in topics.all():
        broker.create(spec.name, spec.partitions)
    worker = Worker(broker, settings, load_rules(None), Plan(), Run(Plan()))
    collector = SimProducer(broker)
    encode = serde().encoder("Touchpoint")

    def publish(*events: Touchpoint) -> None:
        for tp in events:
            collector.produce(topics.touchpoints.name, encode(tp.to_record()), tp.routing_key())
        collector.flush()
        for _ in range(4):
            for _ in range(10):
                worker.engine.poll()
            worker.engine.checkpoint()

    events = make_events(11, persons=1, count=12)
    publish(*events[:6])
    # A journey state the journey stage cannot read.
    states = worker.engine.tables["journey-states"]
    corrupted = []
    for p in states.held:
        states.partition = p
        for person in list(states):
            if not person.startswith("__"):
                states[person] = {"touches": "not a list", "version": "x"}
                corrupted.append(person)
    assert corrupted
    # Model snapshots that cannot be decoded, or decoded but not used.
    models = topics.attribution_models.name
    collector.produce(models, b"\x00not avro", b"markov")
    bad = {
        "model": "markov",
        "version": "v-bad",
        "computed_at": events[0].occurred_at,
        "paths_seen": 1,
        "conversions": 1.0,
        "weights": {},
        "snapshot_json": '{"model": "markov", "weights": 3}',
    }
    collector.produce(models, serde().encode("AttributionModel", bad), b"markov")
    # A 2 MB event.
    huge = replace(
        events[6],
        event_id="ev-huge",
        properties={"blob": "x" * 2_000_000},
        occurred_at=events[6].occurred_at - timedelta(seconds=1),
    )
    publish(huge, *events[6:])

    dead = [serde().decode(m.value() or b"") for m in broker.messages(topics.dead_letters.name)]
    reasons = "\n".join(d["error"] for d in dead)
    assert "journey state format" in reasons, reasons
    assert reasons.count("unusable model snapshot") == 2, reasons
    assert "message limit" in reasons and "payload cut" in reasons, reasons
    written = [t for t in broker.topics if t != topics.touchpoints.name]  # not the input
    assert all(len(m.value() or b"") < 1_000_000 for t in written for m in broker.messages(t))
    # The events after the poison were processed: routed to the journey stage.
    routed = {
        serde().decode(m.value() or b"")["event_id"]
        for m in broker.messages(topics.person_touchpoints.name)
        if not dict(m.headers() or []).get("journeys-control")
    }
    assert {tp.event_id for tp in events[6:]} <= routed
    assert "ev-huge" not in routed
    # Two snapshots and the 2 MB event; the corrupt journey state is the stage's own.
    assert worker.engine.counters.dead_letters >= 3
    assert isinstance(worker.engine.dead_letter, DeadLetters)
