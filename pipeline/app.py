"""The Faust application: topics, tables and agents of the stream processors."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import ProducerT

from pipeline.agents.identity import IdentityOwner, IdentityRouter
from pipeline.agents.journeys import JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.messages import UPSTREAM_HEADER
from pipeline.agents.output import OutputProducer
from pipeline.core.identity import IdentityGraph, IdentityStores
from pipeline.rules import load_rules
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, Topics

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

    def _new_producer(self) -> ProducerT:
        return _FlushingProducer(self.transport, loop=self.loop, beacon=self.beacon)


class _OneLookupReads(MutableMapping[str, Any]):
    """A Faust table whose ``get`` reads its store once.

    ``table.get(key)`` asks the store whether the key exists, then reads it (two RocksDB
    lookups, with Faust's layers around each); the identity graph reads about ten keys
    per event. Writes and deletes go through the table, so they still reach the
    changelog.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.table.data.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def create_app(
    settings: Settings, serde: AvroSerde | None = None, *, recovery_consistency_check: bool = True
) -> faust.App:
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

    source = raw_topic(topics.touchpoints.name, topics.touchpoints.partitions)
    outputs = {spec.name: raw_topic(spec.name, spec.partitions) for spec in topics.all()}
    output = app.output = OutputProducer(settings.kafka_config())
    send = output.send_all

    # -- identity: the graph's stores are tables of the one-partition owner topic ------
    # use_partitioner: the fast path reads them from events of other topics (a plain
    # table would read the store of the current event's partition number).
    def owner_table(name: str) -> Any:
        return _OneLookupReads(app.Table(name, default=None, partitions=1, use_partitioner=True))

    rules = load_rules(settings.rules_file)
    graph = IdentityGraph(
        rules.identity,
        IdentityStores(
            ident_to_person=owner_table("identity-persons-by-identifier"),
            persons=owner_table("identity-persons"),
            forward=owner_table("identity-forwards"),
            links=owner_table("identity-links-seen"),
            shapes=owner_table("identity-shapes"),
        ),
    )
    router = IdentityRouter(serde, topics, graph)
    owner = IdentityOwner(serde, topics, graph)

    @app.agent(source, name="identity-router")
    async def identity_router(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            send(router.process(event.value, msg.topic, msg.partition, msg.offset))

    async def each_event(stream: Any, process: Any) -> None:
        """Feed *stream* to a step one event at a time (so that Faust's current_event()
        names the partition whose changelog a table write belongs to), with the
        upstream and control headers, and send what it returns."""
        async for event in stream.events():
            msg = event.message
            headers = dict(msg.headers or ())
            send(
                process(
                    event.value,
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    headers.get(UPSTREAM_HEADER),
                    headers.get(CONTROL_HEADER),
                )
            )

    @app.agent(outputs[topics.identity_links.name], name="identity-owner")
    async def identity_owner(stream: Any) -> None:
        await each_event(stream, owner.process)

    # -- journeys and attribution, keyed by person ------------------------------------
    states = app.Table(
        "journey-states", default=None, partitions=topics.person_touchpoints.partitions
    )
    snapshots = app.GlobalTable("attribution-snapshots", default=None, partitions=1)
    journey_step = JourneyStep(
        serde, topics, states, SnapshotCache(snapshots), rules=rules.journeys
    )

    @app.agent(outputs[topics.person_touchpoints.name], name="journeys")
    async def journeys(stream: Any) -> None:
        await each_event(stream, journey_step.process)

    # -- the data-driven models learn from every closed path (one partition) -----------
    learner = ModelLearner(
        serde,
        topics,
        app.Table("model-paths", default=None, partitions=1),
        app.Table("model-journeys", default=None, partitions=1),
        snapshots,
        refit_every=settings.model_refit_every,
    )

    @app.agent(outputs[topics.closed_paths.name], name="model-learner")
    async def model_learner(stream: Any) -> None:
        async for event in stream.events():
            learner.add(event.value)
            if learner.due():
                send(learner.refit())

    return app
