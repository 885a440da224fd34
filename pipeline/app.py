"""The worker: a Faust worker whose stream processing runs in the batch engine.

``journeys worker`` is a Faust (mode) worker: process lifecycle, signals, logging. Its
stages (identity router, identity owner, journey stage, model learner) run in the batch
engine (:mod:`pipeline.agents.engine`), a service of that worker, which consumes with
confluent-kafka in batches instead of Faust's per-event streams (five times less CPU
per touchpoint, see ``docs/performance.md``). Every worker follows
``journeys.attribution-models`` into the journey stage's snapshot cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service

from pipeline.agents.audiences import register_audience_agents
from pipeline.agents.engine import Engine, Stage
from pipeline.agents.identity import IdentityOwner, IdentityRouter
from pipeline.agents.journeys import JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.output import DeadLetters, OutputProducer
from pipeline.core.attribution import AttributionError, snapshot_from_record
from pipeline.core.identity import IdentityGraph, IdentityStores
from pipeline.metrics import MetricsServer, Registry
from pipeline.rules import Rules, load_rules
from pipeline.serde import AvroSerde, SerdeError
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)


class SnapshotError(ValueError):
    """A record of ``journeys.attribution-models`` that cannot be used."""


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


class _EngineBoot(BootStrategy):
    """The worker's Faust app starts no Kafka client of its own: the engine has them."""

    enable_kafka = False
    enable_web = False


class WorkerApp(faust.App):
    """The Faust app of a worker; ``journeys worker`` starts :attr:`engine` with it."""

    BootStrategy = _EngineBoot
    engine: EngineService | None = None


class EngineService(Service):
    """Runs the batch engine (:mod:`pipeline.agents.engine`) on the worker's event loop.

    Each batch is processed without yielding; between batches the loop serves the
    output producer's delivery reports and the worker's own services.
    """

    #: The worker's Prometheus endpoint (``JOURNEYS_METRICS_PORT``), when it has one.
    metrics: MetricsServer | None = None

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine

    async def on_start(self) -> None:
        if self.metrics is not None:
            self.metrics.start()  # first: a port in use stops the worker before it consumes
        self.engine.start()

    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            done = self.engine.poll()
            await asyncio.sleep(0 if done else 0.005)

    async def on_stop(self) -> None:
        try:
            self.engine.close()
        finally:
            if self.metrics is not None:
                self.metrics.stop()


def worker_metrics(engine: Engine, router: IdentityRouter) -> Registry:
    """The worker's metrics, read from the engine's, the output producer's and the
    identity router's own counters at scrape time (``docs/metrics.md``)."""
    counters, output = engine.counters, engine.output
    registry = Registry()
    registry.counter(
        "journeys_engine_messages_total",
        "Messages the batch engine processed, by input topic.",
        lambda: {**dict.fromkeys(engine.stages, 0), **counters.per_topic},
        labels=("topic",),
    )
    registry.counter(
        "journeys_engine_batches_total",
        "Consumed batches in which the engine processed at least one message.",
        lambda: counters.batches,
    )
    registry.counter(
        "journeys_engine_checkpoints_total",
        "Checkpoints: changelogs produced, outputs acknowledged, markers written, stores "
        "written, offsets committed.",
        lambda: counters.checkpoints,
    )
    registry.counter(
        "journeys_engine_restored_records_total",
        "Changelog records read back into local state when partitions were assigned.",
        lambda: counters.restored,
    )
    registry.counter(
        "journeys_engine_dead_letters_total",
        "Messages the engine turned into dead letters: a step raised, or an output was "
        "over the message limit.",
        lambda: counters.dead_letters,
    )
    registry.counter(
        "journeys_engine_skipped_changelog_records_total",
        "Changelog records a restore skipped: undecodable, or of no valid checkpoint.",
        lambda: counters.skipped_changelog,
    )
    registry.gauge(
        "journeys_engine_partitions_held",
        "Partitions of each state table this worker holds now.",
        lambda: {name: len(table.held) for name, table in dict(engine.tables).items()},
        labels=("table",),
    )
    registry.counter(
        "journeys_output_messages_total",
        "Messages the worker produced: outputs, changelog records and restore fences.",
        lambda: output.produced,
    )
    registry.gauge(
        "journeys_output_unacknowledged",
        "Produced messages the broker has not acknowledged yet.",
        lambda: output.unacknowledged,
    )
    registry.counter(
        "journeys_identity_fast_path_total",
        "Touchpoints the identity router resolved itself (hit) or sent to the identity "
        "owner (miss).",
        lambda: {"hit": router.hits, "miss": router.misses},
        labels=("result",),
    )
    return registry


@dataclass(frozen=True)
class WorkerStages:
    """The steps :func:`build_engine_stages` wired."""

    router: IdentityRouter
    owner: IdentityOwner
    journeys: JourneyStep
    learner: ModelLearner


def build_engine_stages(
    engine: Engine, settings: Settings, serde: AvroSerde, topics: Topics, rules: Rules
) -> WorkerStages:
    """Wire the worker's stages, tables and snapshot follower into *engine*; the worker
    and the deterministic simulation (``tests/unit/sim``) both call this."""
    engine.dead_letter = DeadLetters(serde, topics.dead_letters.name)

    # -- identity: the router on every touchpoints partition, the owner on its one ----
    identity = {
        name: engine.table(f"identity-{name}", partitions=1)
        for name in ("persons-by-identifier", "persons", "forwards", "links-seen", "shapes")
    }
    graph = IdentityGraph(
        rules.identity,
        IdentityStores(
            ident_to_person=identity["persons-by-identifier"],
            persons=identity["persons"],
            forward=identity["forwards"],
            links=identity["links-seen"],
            shapes=identity["shapes"],
        ),
    )
    owner = IdentityOwner(serde, topics, graph)
    # The worker that holds the owner's partition resolves its own misses in place.
    owner_table = identity["persons"]
    router = IdentityRouter(serde, topics, graph, owner=owner, owns=lambda: owner_table.holds(0))
    engine.stage(Stage(topics.touchpoints.name, router.process, aligned=True))
    engine.stage(Stage(topics.identity_links.name, owner.process, tuple(identity.values())))

    # -- journeys and attribution, keyed by person ------------------------------------
    snapshots = SnapshotCache({})
    states = engine.table("journey-states", partitions=topics.person_touchpoints.partitions)
    journey_step = JourneyStep(
        serde,
        topics,
        states,
        snapshots,
        rules=rules.journeys,
        required_consent=settings.required_consent_categories(),
        identity_rules=rules.identity,
    )
    engine.stage(
        Stage(
            topics.person_touchpoints.name,
            journey_step.process,
            (states,),
            release=journey_step.release,
        )
    )

    # -- the data-driven models learn from every closed path (one partition) -----------
    paths = engine.table("model-paths", partitions=1)
    seen = engine.table("model-journeys", partitions=1)
    learner = ModelLearner(
        serde, topics, paths, seen, snapshots, refit_every=settings.model_refit_every
    )
    engine.stage(Stage(topics.closed_paths.name, learner.process, (paths, seen)))

    def follow_snapshot(msg: Any) -> None:
        """A snapshot is parsed here, where it enters: one that cannot be used raises,
        and the engine makes it a dead letter (once per worker start)."""
        value = msg.value()
        if value is None:
            return
        try:
            record = serde.decode(value, expect="AttributionModel")
            snapshot_from_record(json.loads(record["snapshot_json"]))
        except (SerdeError, AttributionError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"unusable model snapshot: {exc}") from exc
        snapshots.offer(record)

    engine.follow(topics.attribution_models.name, follow_snapshot)
    return WorkerStages(router, owner, journey_step, learner)


def create_app(settings: Settings, serde: AvroSerde | None = None) -> WorkerApp:
    """Build the worker for *settings*; the only I/O before it starts is the fence that
    ends the audiences table's changelog before Faust recovers it (fence_changelog)."""
    serde = serde or AvroSerde.from_dir(settings.schemas_dir, settings.schema_registry_url)
    topics = Topics.from_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.worker_id,
        broker=_broker_url(settings.kafka_bootstrap),
        broker_credentials=settings.faust_credentials(),
        datadir=str(settings.data_dir),
        web_enabled=False,
    )
    output = OutputProducer(settings.kafka_config())
    engine = Engine(settings, output)
    app.engine = EngineService(engine)
    rules = load_rules(settings.rules_file)
    stages = build_engine_stages(engine, settings, serde, topics, rules)
    # -- profiles and audiences: Faust agents on the journey stage's person signals ----
    register_audience_agents(app, settings, serde, topics, rules.segments)
    if settings.metrics_port is not None:
        app.engine.metrics = MetricsServer(
            worker_metrics(engine, stages.router), settings.metrics_host, settings.metrics_port
        )
    return app
