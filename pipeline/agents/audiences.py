"""Profiles and audiences as Faust agents: person signals in, profiles and segment
changes out. :func:`register_audience_agents` wires the step
(:mod:`pipeline.agents.audience_step`) into the worker's Faust app as the agent
``audiences`` with its table ``audience-persons`` (:mod:`pipeline.agents.audience_table`),
and its relay of merges and forgets into the batch engine; those modules' names stay
importable from here. See ``docs/segments.md``, and ``docs/extending.md`` for agents of
one's own."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from pipeline.agents import faust_fixes
from pipeline.agents.audience_step import (
    MAX_HANDOVER_HOPS,
    TICK_CONTROL,
    TICK_KEY,
    AudienceStep,
    IdentityRelay,
)
from pipeline.agents.audience_table import (
    FORWARD,
    RECOVERY_FENCE_KEY,
    WATERMARK_KEY,
    crc32_partitioner,
    fence_changelog,
    partition_for,
    reserved_key,
    unquoted,
    watermark_key,
)
from pipeline.agents.engine import Stage
from pipeline.agents.output import OutputProducer
from pipeline.core.segments import SegmentRules
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, Topics

__all__ = [
    "FORWARD",
    "MAX_HANDOVER_HOPS",
    "RECOVERY_FENCE_KEY",
    "TICK_CONTROL",
    "TICK_KEY",
    "WATERMARK_KEY",
    "AudienceStep",
    "IdentityRelay",
    "crc32_partitioner",
    "fence_changelog",
    "load_agent_modules",
    "partition_for",
    "register_audience_agents",
    "reserved_key",
    "unquoted",
    "watermark_key",
]

log = logging.getLogger(__name__)


def _control_of(headers: Any) -> bytes | None:
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in items:
        if name == CONTROL_HEADER:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def register_audience_agents(
    app: Any, settings: Settings, serde: AvroSerde, topics: Topics, rules: SegmentRules
) -> AudienceStep | None:
    """Add the ``audiences`` agent and its table to the worker's Faust *app*, and turn on
    the app's Kafka consumer and producer (for the agents only: the batch engine keeps
    its own clients). With ``JOURNEYS_AUDIENCES=false`` only the user's agents are added,
    and Kafka stays off when there are none."""
    from faust.serializers import codecs

    faust_fixes.apply()  # table recovery on the embedded broker (see the module)
    if not settings.audiences and not settings.agent_modules.strip():
        return None
    app.boot_strategy.enable_kafka = True
    conf = app.conf
    conf.topic_partitions = settings.partitions
    conf.topic_replication_factor = settings.replication_factor
    conf.broker_session_timeout = settings.session_timeout_s
    conf.broker_heartbeat_interval = max(0.5, settings.session_timeout_s / 6)
    conf.consumer_auto_offset_reset = "earliest"
    # Tansu's high watermark lags behind multi-record batches: the check would refuse
    # to recover a table after kill -9 (see docs/segments.md).
    conf.recovery_consistency_check = False
    conf.producer_linger_ms = 20
    conf.producer_partitioner = crc32_partitioner

    if not settings.audiences:
        load_agent_modules(app, settings, serde, topics)
        return None
    states = app.Table(
        "audience-persons",
        default=None,
        partitions=topics.person_signals.partitions,
        key_type=str,  # raw keys, JSON values (the app's default serializers)
        # The changelog partition comes from the key (CRC32, as the signals'), not from
        # the current event: the agent writes its batch's persons after the batch.
        use_partitioner=True,
    )
    # Before the table recovers (the worker has not started): see fence_changelog.
    fence_changelog(
        settings,
        f"{app.conf.id}-{states.name}-changelog",
        topics.person_signals.partitions,
        lambda key: codecs.dumps(states.key_serializer, key),
        lambda value: codecs.dumps(states.value_serializer, value),
    )
    step = AudienceStep(
        serde,
        topics,
        states,
        rules,
        grace_s=settings.audience_grace_s,
        snapshot_min_records=settings.snapshot_min_records,
        changelog_key=lambda key: unquoted(codecs.dumps(states.key_serializer, key)),
    )
    names = [topics.person_signals.name]
    service = getattr(app, "engine", None)
    if service is not None:  # merges and forgets reach the agent as controls
        relay = IdentityRelay(serde, topics)
        service.engine.stage(Stage(topics.identity_changes.name, relay.process))
    else:  # an app without the batch engine: the agent reads the changes itself
        names.append(topics.identity_changes.name)
    source = app.topic(
        *names,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.person_signals.partitions,
    )
    # Outputs go through librdkafka (a few µs each, against tens for Faust's aiokafka
    # producer); Faust flushes its producer before it commits the agent's offsets, and
    # that flush now waits for these outputs too, so no offset runs ahead of them.
    output = OutputProducer(settings.kafka_config())
    producer = app.producer
    faust_flush = producer.flush

    async def flush_both() -> None:
        await faust_flush()
        output.flush_sync()

    producer.flush = flush_both

    @app.agent(source, name="audiences")
    async def audiences(stream: Any) -> None:
        async for events in stream.take_events(100, within=0.05):
            for event in events:
                msg = event.message
                outs = step.process(
                    event.value, msg.topic, msg.partition, msg.offset, _control_of(msg.headers)
                )
                for out in outs:
                    output.send(out)
            for out in step.flush():  # each changed person written once per batch
                output.send(out)

    @app.task
    async def _larger_producer_buffer() -> None:
        # The table's changelog goes through Faust's producer: no "buffer full" stalls.
        app.producer.buffer.max_messages = 10_000

    @app.timer(interval=settings.audience_idle_s)
    async def _tick() -> None:
        for out in step.ticks(settings.audience_idle_s):
            output.send(out)

    @app.on_partitions_revoked.connect
    async def _released(_app: Any, revoked: Any, **_kw: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.person_signals.name:
                step.release(tp.partition)

    load_agent_modules(app, settings, serde, topics)
    return step


def load_agent_modules(app: Any, settings: Settings, serde: AvroSerde, topics: Topics) -> None:
    """Call ``register(app, settings, serde, topics)`` of every module named in
    ``JOURNEYS_AGENT_MODULES``: the user's own agents, in the same Faust app."""
    for name in (n.strip() for n in settings.agent_modules.split(",")):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"JOURNEYS_AGENT_MODULES: cannot import {name!r}: {exc}") from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(
                f"JOURNEYS_AGENT_MODULES: {name} has no register(app, settings, serde, topics)"
            )
        register(app, settings, serde, topics)
        log.info("agents of %s registered", name)
