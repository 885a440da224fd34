"""Profiles and audiences on the real broker, worker (Faust agents) and ClickHouse engine:
a cart added in the app and bought on the web never enters abandoned_cart; a cart
added and left does, and its entry reaches journeys.audiences and ClickHouse."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.stack import SinkService, spawn, stop_process
from pipeline.broker import EmbeddedBroker, Janitor
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from pipeline.topics import Topics, ensure_topics
from sinks.report.data import fetch_report
from sinks.report.sql import bind, parse_query_file
from tests.conftest import REPO, settings_env
from tests.integration.test_end_to_end import replay, scalar

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
APP = {"app": {"name": "Shop", "version": "5.1"}, "device": {"type": "ios"}}
WEB = {"page": {"url": "https://shop.example.com/checkout"}, "userAgent": "Mozilla/5.0 (Windows)"}


def _msg(n: int, at: datetime, user: str, anon: str, context: dict[str, Any], **body: Any) -> str:
    return json.dumps(
        {
            "messageId": f"m-{n}",
            "timestamp": at.isoformat(),
            "userId": user,
            "anonymousId": anon,
            "context": context,
            **body,
        }
    )


def _events() -> list[str]:
    """Buyer: adds in the app, buys on the web 3 h later. Leaver: adds in the app and
    goes. Merged: adds on a phone as an unknown visitor, buys on the laptop, then logs in
    on the phone (a merge). Others: e-mail-free page traffic and orders over the next three days, on
    every partition, so that every clock moves past the leaver's 24 hours."""
    lines = [
        _msg(0, T0 - timedelta(minutes=1), "u-buyer", "a-phone", APP, type="identify",
             traits={"email": "Buyer@Example.com"}),
        _msg(1, T0, "u-buyer", "a-phone", APP, type="track", event="Product Added",
             properties={"price": 19.5, "quantity": 2}),
        _msg(2, T0 + timedelta(hours=3), "u-buyer", "a-laptop", WEB, type="track",
             event="Order Completed", properties={"order_id": "o-1", "revenue": 39.0}),
        _msg(3, T0 + timedelta(minutes=5), "u-leaver", "l-phone", APP, type="track",
             event="Product Added", properties={"price": 55.0, "quantity": 1}),
        # Merged later: a cart on a phone not yet known to be the customer's, an order on
        # the laptop, then a login on the phone joins the two persons.
        json.dumps({"messageId": "m-20", "timestamp": (T0 + timedelta(minutes=7)).isoformat(),
                    "anonymousId": "x-phone", "context": APP, "type": "track",
                    "event": "Product Added", "properties": {"price": 30.0, "quantity": 1}}),
        _msg(21, T0 + timedelta(hours=2), "u-merge", "x-laptop", WEB, type="track",
             event="Order Completed", properties={"order_id": "o-m", "revenue": 30.0}),
        _msg(22, T0 + timedelta(hours=3), "u-merge", "x-phone", APP, type="screen",
             name="Home"),
    ]  # fmt: skip
    for i in range(40):
        at = T0 + timedelta(hours=2 * i)
        lines.append(
            _msg(100 + i, at, f"u-other-{i}", f"o-{i}", WEB, type="track",
                 event="Order Completed", properties={"order_id": f"o-x{i}", "revenue": 10.0})
        )  # fmt: skip
    return lines


def _audience_records(cfg: Settings, serde: AvroSerde) -> list[dict[str, Any]]:
    """Every record on journeys.audiences (until none came for 3 s)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **cfg.kafka_config(),
            "group.id": f"{cfg.topic_prefix}-audience-reader",
            "auto.offset.reset": "earliest",
        }
    )
    spec = Topics.from_settings(cfg).audiences
    consumer.assign(
        [TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in range(spec.partitions)]
    )
    out: list[dict[str, Any]] = []
    deadline, last = time.monotonic() + 30, time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < 3:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            last = time.monotonic()
            out.append(serde.decode(msg.value(), expect="AudienceChange"))
    finally:
        consumer.close()
    return out


MEMBERS = """
    SELECT i.identifier_value FROM {db}.segment_membership AS m FINAL
    INNER JOIN (SELECT identifier_value, person_id FROM {db}.identities FINAL
                WHERE identifier_type = 'user_id') AS i USING (person_id)
    WHERE m.segment = 'abandoned_cart' AND m.is_member = 1
"""


def _settled(service: SinkService, worker: Any, db: str) -> list[str]:
    """The user ids in abandoned_cart once every order is folded (the stream's last hour
    too, once it has gone quiet)."""
    started = time.monotonic()
    current: list[str] = []
    while time.monotonic() - started < 150:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
        current = sorted(str(r[0]) for r in service.query(MEMBERS.format(db=db))[1])
        orders = scalar(service, f"SELECT sum(orders) FROM {db}.persons FINAL")
        if current and orders == 42:
            break
        time.sleep(1.0)
    return current


def _assert_recovered(service: SinkService, worker: Any, db: str) -> None:
    """After a kill -9 and the rest of the replay: the calm run's members and orders
    (redelivered signals not counted again) and one abandoned cart."""
    assert _settled(service, worker, db) == ["u-leaver"]
    orders = scalar(service, f"SELECT sum(orders) FROM {db}.persons FINAL")
    assert orders == 42  # redelivered signals were not counted again
    carts = scalar(
        service,
        f"SELECT count() FROM {db}.audience_changes FINAL WHERE segment = 'abandoned_cart'",
    )
    assert carts == 1


def _run_query(service: SinkService, db: str, name: str, **params: str) -> list[Any]:
    path = next((REPO / "queries").glob(f"{name}_*.sql"))
    sql = bind(parse_query_file(path), params).replace("journeys.", f"{db}.")
    return [tuple(r) for r in service.query(sql)[1]]


def _check_queries(service: SinkService, db: str) -> None:
    """The profile, frequency, peak-time, social and segment-size queries on this run."""
    (profile,) = _run_query(service, db, "21", email=" buyer@example.COM ")
    assert profile[1] == "first_time_buyer" and profile[5] == 1  # stage, orders
    assert [seg for seg, _at in profile[2]] == ["first_time_buyer"]
    assert _run_query(service, db, "21", user_id="u-buyer")[0][0] == profile[0]
    assert _run_query(service, db, "21", user_id="nobody") == []
    frequency = _run_query(service, db, "18")
    assert frequency[0][:2] == ("1", 42)  # 42 buyers with one order each
    peaks = _run_query(service, db, "17")
    assert sum(r[5] for r in peaks) == 42  # orders
    sizes = _run_query(service, db, "20", segment="abandoned_cart")
    assert [(r[1], r[2], r[3]) for r in sizes] == [("abandoned_cart", 1, 1)]
    assert _run_query(service, db, "19")[-1][0] == "all channels"
    report = fetch_report(service.client.raw_query, db)
    sizes_now = {s.segment: s.members for s in report.segments}
    assert sizes_now["abandoned_cart"] == 1 and sizes_now["first_time_buyer"] == 42


@pytest.mark.timeout(240)
def test_a_cart_bought_on_another_device_never_enters_abandoned_cart(
    stack_settings: Settings, tmp_path: Path
) -> None:
    cfg = stack_settings.model_copy(update={"audience_idle_s": 1.0})
    db = cfg.clickhouse_database
    path = tmp_path / "segment.jsonl"
    path.write_text("\n".join(_events()) + "\n", encoding="utf-8")
    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    try:
        stats = replay(cfg, service, path)
        assert stats.rejected == 0
        assert _settled(service, worker, db) == ["u-leaver"]
        time.sleep(3)  # nothing else enters later
        assert sorted(str(r[0]) for r in service.query(MEMBERS.format(db=db))[1]) == ["u-leaver"]

        buyer = f"""
            SELECT p.orders, p.revenue, p.app_user, p.cart_items, p.lifecycle_stage,
                   mapKeys(p.devices), mapKeys(p.platforms)
            FROM {db}.persons AS p FINAL
            INNER JOIN (SELECT person_id FROM {db}.identities FINAL
                        WHERE identifier_type = 'user_id' AND identifier_value = 'u-buyer') AS i
                  USING (person_id)
        """
        rows = service.query(buyer)[1]
        assert len(rows) == 1
        orders, revenue, app_user, cart_items, stage, _devices, platforms = rows[0]
        assert (orders, revenue, app_user, cart_items, stage) == (1, 39.0, 1, 0, "first_time_buyer")
        assert sorted(platforms) == ["app", "web"]
        merged = service.query(buyer.replace("'u-buyer'", "'u-merge'"))[1]
        assert [tuple(r[:5]) for r in merged] == [(1, 30.0, 1, 0, "first_time_buyer")]
        history = scalar(
            service,
            f"SELECT count() FROM {db}.audience_changes WHERE segment = 'abandoned_cart'",
        )
        assert history == 1  # the leaver's entry, and no enter-then-exit of the buyer

        _check_queries(service, db)

        records = _audience_records(cfg, service.serde)
        carts = [r for r in records if r["segment"] == "abandoned_cart"]
        assert len(carts) == 1 and carts[0]["change"] == "ENTERED"
        assert carts[0]["at"] == T0 + timedelta(minutes=5, hours=24)
    finally:
        stop_process(worker)
        service.stop()


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_stream_keeps_profiles_and_audiences(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """kill -9 of the worker between two halves of the stream: the restored Faust table
    and the redelivered signals give the same profiles and members, nothing counted twice."""
    cfg = stack_settings.model_copy(update={"audience_idle_s": 1.0})
    db = cfg.clickhouse_database
    lines = _events()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    second.write_text("\n".join(lines[20:]) + "\n", encoding="utf-8")
    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    try:
        replay(cfg, service, first)
        started = time.monotonic()
        while scalar(service, f"SELECT count() FROM {db}.persons") == 0:
            assert time.monotonic() - started < 120, "no profile before the kill"
            time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = spawn(["worker"], env=settings_env(cfg))
        replay(cfg, service, second)
        _assert_recovered(service, worker, db)
    finally:
        stop_process(worker)
        service.stop()


@pytest.mark.timeout(300)
def test_the_audience_table_is_cut_below_its_snapshot_and_recovers_from_what_is_left(
    stack_settings: Settings, tmp_path: Path, persistent: EmbeddedBroker
) -> None:
    """Issue 15, on the persistent broker (no compaction): with snapshots every few
    records, the janitor deletes the Faust table changelog's batches below the last framed
    snapshot (and the engine's below theirs); a worker killed after that recovers its
    table from what is left and gives the same members and orders."""
    cfg = stack_settings.model_copy(
        update={
            "kafka_bootstrap": persistent.bootstrap,
            "audience_idle_s": 1.0,
            "snapshot_min_records": 3,
        }
    )
    db = cfg.clickhouse_database
    lines = _events()
    # App screens of the first buyers, an hour apart: each moves its partition's
    # clock, so the table's changelog outgrows its keys (segments do not change).
    screens = [
        _msg(300 + i, T0 + timedelta(hours=i), f"u-other-{i % 8}", f"o-{i % 8}", APP,
             type="screen", name="Home")
        for i in range(24)
    ]  # fmt: skip
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(lines[:20] + screens) + "\n", encoding="utf-8")
    second.write_text("\n".join(lines[20:]) + "\n", encoding="utf-8")
    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    janitor = Janitor(persistent)
    try:
        replay(cfg, service, first)
        changelog = f"{cfg.worker_id}-audience-persons-changelog"
        started = time.monotonic()
        while not any(
            floor for (topic, _p), (_at, _s, floor) in janitor.marks.items()
            if topic == changelog
        ):  # fmt: skip
            assert time.monotonic() - started < 120, "no framed snapshot was cut"
            assert worker.poll() is None, f"worker exited with {worker.returncode}"
            janitor.sweep()
            time.sleep(1.0)
        assert janitor.deleted > 0
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        janitor.sweep()
        worker = spawn(["worker"], env=settings_env(cfg))
        replay(cfg, service, second)
        _assert_recovered(service, worker, db)
    finally:
        stop_process(worker)
        service.stop()
