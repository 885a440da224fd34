"""The Faust application: topics, tables and agents of the stream processors."""

from __future__ import annotations

import logging
from typing import Any

import faust

from pipeline.agents.journeys import JourneyStep, ModelLearner, SnapshotCache
from pipeline.agents.provisional import UPSTREAM_HEADER, ProvisionalIdentity
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics

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
    seen = app.Table(
        "provisional-identifiers",
        default=None,
        partitions=topics.touchpoints.partitions,
    )
    step = ProvisionalIdentity(serde, topics, seen)

    @app.agent(source, name="provisional-identity")
    async def provisional_identity(stream: Any) -> None:
        # One event at a time, so that Faust's current_event() names the partition whose
        # changelog a table write belongs to.
        async for event in stream.events():
            msg = event.message
            for out in step.process(event.value, msg.topic, msg.partition, msg.offset):
                await outputs[out.topic].send(
                    key=out.key, value=out.value, headers=list(out.headers) or None
                )

    # -- journeys and attribution, keyed by person ------------------------------------
    states = app.Table(
        "journey-states", default=None, partitions=topics.person_touchpoints.partitions
    )
    snapshots = app.GlobalTable("attribution-snapshots", default=None, partitions=1)
    journey_step = JourneyStep(serde, topics, states, SnapshotCache(snapshots))

    @app.agent(outputs[topics.person_touchpoints.name], name="journeys")
    async def journeys(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            headers = dict(msg.headers or ())
            for out in journey_step.process(
                event.value, msg.topic, msg.partition, msg.offset, headers.get(UPSTREAM_HEADER)
            ):
                await outputs[out.topic].send(key=out.key, value=out.value)

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
                    await outputs[out.topic].send(key=out.key, value=out.value)

    return app
