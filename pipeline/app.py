"""The worker: a Faust application that hosts the batch engine and the model learner.

The hot path (identity router, identity owner, journey stage) runs in the batch engine
(:mod:`pipeline.agents.engine`), a service of the Faust worker; the model learner,
which sees one message per closed journey, is a Faust agent with Faust tables, and the
model snapshots are a Faust global table that the journey stage reads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import ProducerT
from mode import Service

from pipeline.agents.engine import Engine, Stage
from pipeline.agents.identity import IdentityOwner, IdentityRouter
from pipeline.agents.journeys import JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.output import OutputProducer
from pipeline.core.identity import IdentityGraph, IdentityStores
from pipeline.rules import load_rules
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


class _FlushingProducer(AIOKafkaProducer):
    """Faust's producer (the tables' changelogs), whose flush also flushes the outputs.

    Faust flushes its producer before it commits offsets, when partitions are revoked
    and when the worker stops: the agents' outputs are then acknowledged too.
    """

    async def flush(self) -> None:
        await super().flush()
        output = getattr(self.app, "output", None)
        if output is not None:
            await output.flush()


class WorkerApp(faust.App):
    """A Faust app whose agents produce through :class:`OutputProducer`."""

    output: OutputProducer | None = None
    #: The batch engine's service; ``journeys worker`` starts it with the app.
    engine: EngineService | None = None

    def _new_producer(self) -> ProducerT:
        return _FlushingProducer(self.transport, loop=self.loop, beacon=self.beacon)


class EngineService(Service):
    """Runs the batch engine (:mod:`pipeline.agents.engine`) on the worker's event loop."""

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine

    async def on_start(self) -> None:
        self.engine.start()

    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            # A batch is processed without yielding; between batches the loop serves
            # Faust (the model learner, heartbeats) and the output producer's reports.
            done = self.engine.poll()
            await asyncio.sleep(0 if done else 0.005)

    async def on_stop(self) -> None:
        self.engine.close()


def create_app(
    settings: Settings, serde: AvroSerde | None = None, *, recovery_consistency_check: bool = True
) -> WorkerApp:
    """Build the Faust app for *settings* (no I/O until it starts).

    *recovery_consistency_check* is Faust's check that a table's locally persisted offset
    is not past its changelog's high watermark; the worker turns it off on the embedded
    Tansu broker, whose high watermark lags behind multi-record batches
    (:func:`pipeline.broker.is_tansu`), so that a worker restarted after ``kill -9``
    recovers instead of refusing to start.
    """
    serde = serde or AvroSerde.from_dir(settings.schemas_dir, settings.schema_registry_url)
    topics = Topics.from_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.worker_id,
        broker=_broker_url(settings.kafka_bootstrap),
        broker_credentials=settings.faust_credentials(),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_linger_ms=20,
        producer_max_batch_size=256 * 1024,
        table_standby_replicas=settings.table_standby_replicas,
        table_cleanup_interval=60.0,
        recovery_consistency_check=recovery_consistency_check,
    )

    @app.task
    async def _larger_producer_buffer() -> None:
        app.producer.buffer.max_messages = 10_000

    def raw_topic(name: str, partitions: int) -> Any:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)

    closed_paths = raw_topic(topics.closed_paths.name, topics.closed_paths.partitions)
    output = app.output = OutputProducer(settings.kafka_config())
    send = output.send_all

    # -- the hot path: identity and journeys in the batch engine ------------------------
    engine = Engine(settings, output)
    app.engine = EngineService(engine)
    rules = load_rules(settings.rules_file)
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
    router = IdentityRouter(serde, topics, graph)
    owner = IdentityOwner(serde, topics, graph)
    engine.stage(Stage(topics.touchpoints.name, router.process, aligned=True))
    engine.stage(Stage(topics.identity_links.name, owner.process, tuple(identity.values())))

    states = engine.table("journey-states", partitions=topics.person_touchpoints.partitions)
    snapshots = app.GlobalTable("attribution-snapshots", default=None, partitions=1)
    journey_step = JourneyStep(
        serde, topics, states, SnapshotCache(snapshots), rules=rules.journeys
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
    learner = ModelLearner(
        serde,
        topics,
        app.Table("model-paths", default=None, partitions=1),
        app.Table("model-journeys", default=None, partitions=1),
        snapshots,
        refit_every=settings.model_refit_every,
    )

    @app.agent(closed_paths, name="model-learner")
    async def model_learner(stream: Any) -> None:
        async for event in stream.events():
            learner.add(event.value)
            if learner.due():
                send(learner.refit())

    return app
