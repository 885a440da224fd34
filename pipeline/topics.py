"""The Kafka topic layout of Journeys: names, keys, partition counts, and their creation.

============================  =====================  ==========  =================
topic (prefix ``journeys``)   key                    partitions  value (schema)
============================  =====================  ==========  =================
``.touchpoints``              strongest identifier   P           Touchpoint
``.identity-links``           ``owner``              1           Touchpoint
``.person-touchpoints``       person_id              P           Touchpoint
``.identity-changes``         person_id (compacted)  P           IdentityChange
``.journeys``                 person_id              P           Journey
``.attribution``              conversion_event_id    P           AttributionCredit
``.closed-paths``             ``paths``              1           ClosedPath
``.attribution-models``       model                  1           AttributionModel
``.dead-letters``             source                 1           DeadLetter
``.person-signals``           person_id              P           PersonSignal
``.profiles``                 person_id (compacted)  P           PersonProfile
``.audiences``                person_id              P           AudienceChange
============================  =====================  ==========  =================

P is ``JOURNEYS_PARTITIONS`` (8 by default): the most workers that can share a stage.

``.person-touchpoints`` also carries control messages between journey stages, marked by
the ``journeys-control`` header (the sink skips them): ``merge`` (an IdentityChange,
keyed by the absorbed person), ``handover`` (the absorbed person's journey state as
JSON, keyed by the survivor) and ``forget`` (drop a person's state). ``.identity-links``
carries ``forget`` requests of ``journeys forget`` to the owner the same way.
``.person-signals`` carries the profile agents' ``merge`` and ``handover`` controls
(:mod:`pipeline.agents.audiences`) under the same header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Header of control messages on ``journeys.person-touchpoints``; its value says which.
CONTROL_HEADER = "journeys-control"
MERGE_CONTROL = b"merge"
HANDOVER_CONTROL = b"handover"
FORGET_CONTROL = b"forget"
#: Identifiers moved from one live person to another (``IdentityChange`` MAP with
#: ``absorbed_person_id``): the old person's journey stage hands their events over.
MOVE_CONTROL = b"move"


class TopicError(RuntimeError):
    """Topics cannot be created or described."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    schema: str
    compacted: bool = False
    #: ``retention.ms`` of the topic when it is created; None: the broker's default.
    retention_ms: int | None = None


def retention_ms(hours: float) -> int:
    """``retention.ms`` for *hours*; 0 or less means keep forever (-1)."""
    return int(hours * 3_600_000) if hours > 0 else -1


@dataclass(frozen=True, slots=True)
class Topics:
    touchpoints: TopicSpec
    identity_links: TopicSpec
    person_touchpoints: TopicSpec
    identity_changes: TopicSpec
    journeys: TopicSpec
    attribution: TopicSpec
    closed_paths: TopicSpec
    attribution_models: TopicSpec
    dead_letters: TopicSpec
    person_signals: TopicSpec
    profiles: TopicSpec
    audiences: TopicSpec

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p, pre = settings.partitions, settings.topic_prefix
        # Input and output topics expire (JOURNEYS_RETENTION_*_HOURS); the closed paths
        # and model snapshots stay: every journey stage reads the snapshots from the start.
        rin = retention_ms(settings.retention_input_hours)
        rout = retention_ms(settings.retention_output_hours)
        return cls(
            touchpoints=TopicSpec(f"{pre}.touchpoints", p, "Touchpoint", retention_ms=rin),
            identity_links=TopicSpec(f"{pre}.identity-links", 1, "Touchpoint", retention_ms=rin),
            person_touchpoints=TopicSpec(
                f"{pre}.person-touchpoints", p, "Touchpoint", retention_ms=rin
            ),
            identity_changes=TopicSpec(f"{pre}.identity-changes", p, "IdentityChange", True),
            journeys=TopicSpec(f"{pre}.journeys", p, "Journey", retention_ms=rout),
            attribution=TopicSpec(f"{pre}.attribution", p, "AttributionCredit", retention_ms=rout),
            closed_paths=TopicSpec(f"{pre}.closed-paths", 1, "ClosedPath", retention_ms=rin),
            attribution_models=TopicSpec(f"{pre}.attribution-models", 1, "AttributionModel"),
            dead_letters=TopicSpec(f"{pre}.dead-letters", 1, "DeadLetter", retention_ms=rin),
            person_signals=TopicSpec(f"{pre}.person-signals", p, "PersonSignal", retention_ms=rout),
            profiles=TopicSpec(f"{pre}.profiles", p, "PersonProfile", True),
            audiences=TopicSpec(f"{pre}.audiences", p, "AudienceChange", retention_ms=rout),
        )

    def all(self) -> tuple[TopicSpec, ...]:
        return (
            self.touchpoints,
            self.identity_links,
            self.person_touchpoints,
            self.identity_changes,
            self.journeys,
            self.attribution,
            self.closed_paths,
            self.attribution_models,
            self.dead_letters,
            self.person_signals,
            self.profiles,
            self.audiences,
        )


def ensure_topics(settings: Settings, topics: Topics | None = None, timeout: float = 15.0) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    ensure_specs(settings, (topics or Topics.from_settings(settings)).all(), timeout)


def ensure_specs(settings: Settings, specs: Iterable[TopicSpec], timeout: float = 15.0) -> None:
    """Create the topics of *specs* that do not exist yet (idempotent)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_config())
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"cannot list topics on {settings.kafka_bootstrap}: {exc}") from exc
    wanted = []
    specs = list(specs)
    _apply_retention(admin, [spec for spec in specs if spec.name in existing], timeout)
    for spec in specs:
        if spec.name in existing:
            continue
        config = {"cleanup.policy": "compact"} if spec.compacted else {}
        if spec.retention_ms is not None:
            config["retention.ms"] = str(spec.retention_ms)
        wanted.append(
            NewTopic(spec.name, spec.partitions, settings.replication_factor, config=config)
        )
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise TopicError(f"cannot create topic {name}: {exc}") from exc
        log.info("created topic %s", name)


def _apply_retention(admin: Any, specs: list[TopicSpec], timeout: float) -> None:
    """Give existing topics the ``retention.ms`` of their spec when it changed (the
    JOURNEYS_RETENTION_* settings); a broker that refuses is logged, not fatal."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    specs = [spec for spec in specs if spec.retention_ms is not None]
    if not specs:
        return
    try:
        described = admin.describe_configs(
            [ConfigResource("topic", spec.name) for spec in specs], request_timeout=timeout
        )
        current = {
            resource.name: future.result().get("retention.ms")
            for resource, future in described.items()
        }
        changes = [
            ConfigResource(
                "topic",
                spec.name,
                incremental_configs=[
                    ConfigEntry(
                        "retention.ms",
                        str(spec.retention_ms),
                        incremental_operation=AlterConfigOpType.SET,
                    )
                ],
            )
            for spec in specs
            if getattr(current.get(spec.name), "value", None) != str(spec.retention_ms)
        ]
        if not changes:
            return
        for resource, future in admin.incremental_alter_configs(changes).items():
            future.result()
            log.info("topic %s: retention.ms set", resource.name)
    except KafkaException as exc:
        log.warning("cannot apply the retention settings to existing topics: %s", exc)
