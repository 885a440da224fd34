"""Identity stitching in the running pipeline: real broker, real worker, real ClickHouse.

* An e-mail click, an anonymous web visit and a store purchase with a loyalty card
  are three persons until an app login links them; then they are one person, the store
  conversion is attributed again over all three channels, and analysts reading
  ``attribution_current`` count its credit once.
* A store kiosk's device id used by three customers leaves three persons, and each
  refused link has an audit row in ``identity_merges``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.publisher import Publisher
from pipeline.core.model import Campaign, Identifier, Touchpoint
from pipeline.core.pii import hash_email
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_end_to_end import wait_for

DAY0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
EMAIL = hash_email("jane.doe@example.org")


def touch(
    n: str,
    at: datetime,
    source: str,
    event_type: str,
    channel: str,
    *ids: tuple[str, str],
    revenue: float | None = None,
    campaign: Campaign | None = None,
) -> Touchpoint:
    return Touchpoint(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"identity-stream:{n}")),
        source=source,
        source_event_id=n,
        occurred_at=at,
        received_at=at,
        channel=channel,
        event_type=event_type,
        identifiers=tuple(Identifier(t, v) for t, v in ids),
        campaign=campaign,
        revenue=revenue,
        currency="USD" if revenue else None,
    )


def filler(tag: str, at: datetime, count: int = 256) -> list[Touchpoint]:
    """Anonymous page views of other visitors: they move every partition's watermark."""
    return [
        touch(f"{tag}-{i}", at, "segment", "page_view", "direct", ("anonymous_id", f"{tag}-{i}"))
        for i in range(count)
    ]


def rows(service: SinkService, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in service.query(sql)[1]]


def publish(publisher: Publisher, events: list[Touchpoint]) -> None:
    for tp in events:
        publisher.touchpoint(tp)
    publisher.flush()


@pytest.mark.timeout(300)
def test_a_late_login_stitches_three_channels_and_reattributes_once(
    stack_settings: Settings, tmp_path: Path
) -> None:
    cfg = stack_settings
    db = cfg.clickhouse_database
    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker: subprocess.Popen[bytes] = spawn(["worker"], env=settings_env(cfg))
    publisher = Publisher(cfg, service.serde)
    journey_events = [
        touch(
            "email-click",
            DAY0,
            "sendgrid",
            "email_click",
            "email",
            ("email_sha256", EMAIL),
            campaign=Campaign(source="newsletter", medium="email", name="autumn"),
        ),
        touch(
            "web-visit",
            DAY0 + timedelta(days=1),
            "segment",
            "page_view",
            "paid_search",
            ("anonymous_id", "anon-jane"),
        ),
        touch(
            "store-purchase",
            DAY0 + timedelta(days=2),
            "pos",
            "store_purchase",
            "store",
            ("loyalty_id", "LOY-JANE"),
            revenue=120.0,
        ),
    ]
    kiosk = [
        touch(
            f"kiosk-{n}",
            DAY0 + timedelta(days=1, hours=n),
            "segment",
            "identify",
            "direct",
            ("device_id", "kiosk-nyc-05"),
            ("user_id", f"kiosk-customer-{n}"),
        )
        for n in (1, 2, 3)
    ]
    conversion = journey_events[2].event_id
    try:
        publish(publisher, journey_events + kiosk + filler("early", DAY0 + timedelta(days=5)))
        # The store purchase converts alone first: a journey of the loyalty card's person.
        wait_for(
            lambda: bool(
                rows(
                    service,
                    f"SELECT 1 FROM {db}.attribution WHERE conversion_event_id = '{conversion}'",
                )
            ),
            120,
            "the first attribution of the store purchase",
            worker,
        )
        first = rows(
            service,
            f"SELECT DISTINCT channel FROM {db}.attribution_current "
            f"WHERE conversion_event_id = '{conversion}'",
        )
        assert first == [("store",)]

        # Two days late, the app login links the card, the e-mail and the web visitor.
        login = touch(
            "app-login",
            DAY0 + timedelta(days=2, hours=3),
            "segment",
            "identify",
            "direct",
            ("user_id", "u-jane"),
            ("email_sha256", EMAIL),
            ("anonymous_id", "anon-jane"),
            ("loyalty_id", "LOY-JANE"),
        )
        publish(publisher, [login, *filler("late", DAY0 + timedelta(days=6))])
        current = (
            f"SELECT model, channel, sum(credit), sum(revenue_credit) "
            f"FROM {db}.attribution_current WHERE conversion_event_id = '{conversion}' "
            "GROUP BY model, channel ORDER BY model, channel"
        )
        wait_for(
            lambda: (
                {c for _m, c, _s, _r in rows(service, current)} == {"email", "paid_search", "store"}
            ),
            120,
            "the store purchase attributed again over three channels",
            worker,
        )

        persons = rows(
            service,
            f"SELECT DISTINCT person_id FROM {db}.identities FINAL WHERE NOT is_deleted AND "
            "(identifier_value IN ('u-jane', 'anon-jane', 'LOY-JANE') "
            f"OR identifier_value = '{EMAIL}')",
        )
        assert len(persons) == 1, persons
        person = persons[0][0]
        # The survivor is the oldest person: the e-mail's (first seen on day 0).
        merges = rows(
            service,
            f"SELECT person_id, absorbed_person_id FROM {db}.identity_merges FINAL "
            "WHERE kind = 'MERGE'",
        )
        assert len(merges) == 2 and all(p == person for p, _a in merges), merges
        journey = rows(
            service,
            f"SELECT person_id, path, version FROM {db}.journeys FINAL "
            f"WHERE conversion_event_id = '{conversion}'",
        )
        assert len(journey) == 1
        assert journey[0][0] == person
        assert sorted(journey[0][1]) == ["email", "paid_search", "store"]  # type: ignore[arg-type]
        assert int(journey[0][2]) >= 2  # type: ignore[call-overload]
        # Old and new credit both exist, but the current view counts each model once.
        versions = rows(
            service,
            f"SELECT uniqExact(version) FROM {db}.attribution "
            f"WHERE conversion_event_id = '{conversion}'",
        )
        assert int(versions[0][0]) >= 2  # type: ignore[call-overload]
        by_model: dict[str, tuple[float, float]] = {}
        for model, _channel, credit, revenue in rows(service, current):
            c, r = by_model.get(str(model), (0.0, 0.0))
            by_model[str(model)] = (c + float(credit), r + float(revenue))  # type: ignore[arg-type]
        assert len(by_model) == 8
        for model, (credit, revenue) in by_model.items():
            assert credit == pytest.approx(1.0), model
            assert revenue == pytest.approx(120.0), model
        assert rows(
            service,
            f"SELECT DISTINCT person_id FROM {db}.attribution_current "
            f"WHERE conversion_event_id = '{conversion}'",
        ) == [(person,)]

        # The kiosk: three customers, three persons; the two refused links are audited.
        kiosk_persons = rows(
            service,
            f"SELECT uniqExact(person_id) FROM {db}.identities FINAL "
            "WHERE identifier_value LIKE 'kiosk-customer-%'",
        )
        assert int(kiosk_persons[0][0]) == 3  # type: ignore[call-overload]
        # Which customer keeps the kiosk depends on arrival order (the three events come
        # through different partitions), but two links are refused either way, each with
        # an audit row naming the rule.
        kiosk_ids = ", ".join(f"'{k.event_id}'" for k in kiosk)
        refusals = rows(
            service,
            f"SELECT rule, event_id, absorbed_person_id FROM {db}.identity_merges FINAL "
            f"WHERE kind = 'REFUSED' AND event_id IN ({kiosk_ids})",
        )
        assert len({e for _r, e, _a in refusals}) == 2, refusals
        assert {r for r, _e, _a in refusals} == {"limit:user_id"}, refusals

        # journeys forget --email: the request the command sends, then nothing is left.
        from confluent_kafka import Producer

        from cli.commands.forget import TABLES
        from pipeline.topics import CONTROL_HEADER, FORGET_CONTROL, Topics

        absorbed = [a for _p, a in merges]
        ids = "[" + ",".join(f"'{p}'" for p in [person, *absorbed]) + "]"
        left = " + ".join(
            f"(SELECT count() FROM {db}.{table} WHERE has({ids}, {column}))"
            for table, column in TABLES
        )
        assert int(rows(service, f"SELECT {left}")[0][0]) > 0  # type: ignore[call-overload]
        producer = Producer(cfg.kafka_config())
        request = {"identifier": {"type": "email_sha256", "value": EMAIL}}
        producer.produce(
            Topics.from_settings(cfg).identity_links.name,
            key=b"owner",
            value=json.dumps(request).encode(),
            headers=[(CONTROL_HEADER, FORGET_CONTROL)],
        )
        assert producer.flush(15) == 0
        wait_for(
            lambda: int(rows(service, f"SELECT {left}")[0][0]) == 0,  # type: ignore[call-overload]
            60,
            "the forgotten person's rows to be deleted",
            worker,
        )
        assert not rows(
            service,
            f"SELECT 1 FROM {db}.identities WHERE identifier_value IN ('u-jane', '{EMAIL}')",
        )
        # the kiosk customers are untouched
        assert rows(
            service,
            f"SELECT uniqExact(person_id) FROM {db}.identities FINAL "
            "WHERE identifier_value LIKE 'kiosk-customer-%'",
        ) == [(3,)]
    finally:
        stop_process(worker)
        service.stop()
