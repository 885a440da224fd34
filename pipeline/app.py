"""The Faust application: topics, tables and agents of the stream processors."""

from __future__ import annotations

import logging
from typing import Any

import faust

from pipeline.agents.identity import IdentityOwner, IdentityRouter
from pipeline.agents.journeys import JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.core.identity import IdentityGraph, IdentityStores
from pipeline.rules import load_rules
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, Topics

log = logging.getLogger(__name__)


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def create_app(settings: Settings, serde: AvroSerde | None = None) -> faust.App:
    """Build the Faust app for *settings* (no I/O until it starts)."""
    serde = serde or AvroSerde.from_dir(settings.schemas_dir, settings.schema_registry_url)
    topics = Topics.from_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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
        producer_linger_ms=5,
        table_cleanup_interval=60.0,
    )

    def raw_topic(name: str, partitions: int) -> Any:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)

    source = raw_topic(topics.touchpoints.name, topics.touchpoints.partitions)
    outputs = {spec.name: raw_topic(spec.name, spec.partitions) for spec in topics.all()}

    async def send(out: Out) -> None:
        await outputs[out.topic].send(
            key=out.key, value=out.value, headers=list(out.headers) or None
        )

    # -- identity: the graph's stores are tables of the one-partition owner topic ------
    # use_partitioner: the fast path reads them from events of other topics (a plain
    # table would read the store of the current event's partition number).
    def owner_table(name: str) -> Any:
        return app.Table(name, default=None, partitions=1, use_partitioner=True)

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
            for out in router.process(event.value, msg.topic, msg.partition, msg.offset):
                await send(out)

    @app.agent(outputs[topics.identity_links.name], name="identity-owner")
    async def identity_owner(stream: Any) -> None:
        # One event at a time, so that Faust's current_event() names the partition whose
        # changelog a table write belongs to.
        async for event in stream.events():
            msg = event.message
            headers = dict(msg.headers or ())
            for out in owner.process(
                event.value,
                msg.topic,
                msg.partition,
                msg.offset,
                headers.get(UPSTREAM_HEADER),
                headers.get(CONTROL_HEADER),
            ):
                await send(out)

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
        async for event in stream.events():
            msg = event.message
            headers = dict(msg.headers or ())
            for out in journey_step.process(
                event.value,
                msg.topic,
                msg.partition,
                msg.offset,
                headers.get(UPSTREAM_HEADER),
                headers.get(CONTROL_HEADER),
            ):
                await send(out)

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
                for out in learner.refit():
                    await send(out)

    return app
