"""The pipeline's main promise (README, docs/journeys.md): journeys, credit and identities
are a function of the set of events, whatever their arrival order, and a conversion is
credited as soon as it is processed, on the real broker and the real ClickHouse engine.

* The generated sample (every source) replayed once in event-time order and once with
  15% of its lines arriving 1 minute to 48 hours late gives the same answers.
* Live, through the collector: a paid-search visit, then two days later (event time) an
  e-mail visit and an order by the same customer on another device. The order is
  credited to both channels within seconds, with no further traffic.

The faults (``kill -9``, a paused worker) are in tests/integration/test_faults.py.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.broker import free_port
from pipeline.topics import ensure_topics
from tests.integration.harness import (
    JOURNEY_KINDS,
    Reference,
    Stack,
    answers,
    arrive_late,
    base_settings,
    calm_run,
    expected_counts,
    isolated,
    record_figures,
    replay_sample,
    sample,
    settled,
    wait_for,
)


@pytest.fixture(scope="module")
def reference(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    tmp = tmp_path_factory.mktemp("guarantee")
    ref = calm_run(base_settings(broker, tmp, "g"), tmp, sample(tmp / "data"))
    record_figures("calm", ref.answers.figures())
    return ref


@pytest.mark.timeout(300)
def test_late_arrivals_give_the_answers_of_the_ordered_replay(
    reference: Reference, tmp_path: Path
) -> None:
    """15% of the lines of every file arrive 1 minute to 48 hours late (in event time):
    the same converted journeys, credit per model and channel, and identities as the
    replay in event-time order, and no event judged too late (all are within the
    30-day maximum lateness)."""
    files, moved = arrive_late(reference.files, tmp_path / "late-data")
    lines = sum(reference.gen.files.values())
    assert 0.10 * lines < moved < 0.20 * lines
    reordered = 0
    for calm, late_file in zip(reference.files, files, strict=True):
        # the same lines, in another order
        calm_lines = [ln for ln in calm.read_bytes().splitlines() if ln.strip()]
        late_lines = late_file.read_bytes().splitlines()
        assert sorted(calm_lines) == sorted(late_lines)
        reordered += calm_lines != late_lines
    assert reordered >= 3
    cfg = isolated(reference.base, tmp_path, "late")
    db = cfg.clickhouse_database
    ensure_topics(cfg)
    stack = Stack(cfg, tmp_path / "late")
    try:
        stack.start_sink()
        stack.start_worker()
        stats = replay_sample(cfg, files)
        assert (stats.records, stats.touchpoints, stats.rejected) == (
            reference.stats.records,
            reference.stats.touchpoints,
            reference.stats.rejected,
        )
        settled(expected_counts(stats, stack), cfg, 180, "the late replay", stack.check_alive)
        late = answers(stack.query, db)
        # The late events did revise journeys (a new version of a journey already out).
        revised = int(stack.query(f"SELECT countIf(version > 1) FROM {db}.journeys FINAL")[0][0])
    finally:
        stack.stop()
    record_figures("late", {**late.figures(), "lines_moved": moved, "journeys_revised": revised})
    assert revised > 0
    assert "journey" not in late.dead_letters, late.journey_dead
    # Journeys and credit first, identities apart: a failure says which stage differs.
    assert late.differences(reference.answers, JOURNEY_KINDS) == []
    assert late.differences(reference.answers, ("identities",)) == []


# ---- live, through the collector ------------------------------------------------------


def _post(port: int, path: str, body: dict[str, Any]) -> None:
    auth = base64.b64encode(b"dev:").decode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        assert resp.status == 200, (path, resp.status)


def _page(anonymous_id: str, user_id: str, url: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "page",
        "messageId": str(uuid.uuid4()),
        "anonymousId": anonymous_id,
        "userId": user_id,
        "properties": {"url": url, "path": "/"},
        "context": {"page": {"url": url, "path": "/"}},
        "timestamp": at.isoformat().replace("+00:00", "Z"),
    }


@pytest.mark.timeout(180)
def test_a_conversion_through_the_collector_is_credited_within_seconds(
    broker: str, tmp_path: Path
) -> None:
    """A paid-search visit, then two days later (event time) an e-mail visit and an order
    by the same user id on another device, through ``journeys collect``: the order's
    linear credit is half paid search, half e-mail, in ClickHouse a few seconds after
    the collector accepted it, with no traffic after it."""
    cfg = isolated(base_settings(broker, tmp_path, "live"), tmp_path, "live")
    db = cfg.clickhouse_database
    ensure_topics(cfg)
    port = free_port()
    stack = Stack(cfg, tmp_path / "live")
    user, start = f"u-{uuid.uuid4().hex[:8]}", datetime.now(UTC) - timedelta(days=3)
    try:
        stack.start_sink()
        stack.start_worker()
        stack.start_other("collect", {"JOURNEYS_COLLECTOR_PORT": str(port)})
        wait_for(lambda: stack.alive_and(lambda: _healthy(port)), 60, "the collector")
        paid = "https://shop.example.com/?utm_source=google&utm_medium=cpc&utm_campaign=brand"
        _post(port, "/v1/page", _page("device-a", user, paid, start))
        # The stack is up once the first visit is stored (the worker has joined its group).
        wait_for(
            lambda: stack.alive_and(lambda: stack.count("touchpoints") == 1),
            90,
            "the paid-search visit in touchpoints",
        )
        later = start + timedelta(days=2)
        mail = "https://shop.example.com/?utm_source=newsletter&utm_medium=email"
        _post(port, "/v1/page", _page("device-b", user, mail, later))
        order = {
            "type": "track",
            "event": "Order Completed",
            "messageId": str(uuid.uuid4()),
            "anonymousId": "device-b",
            "userId": user,
            "properties": {"order_id": "o-1", "revenue": 80.0, "currency": "USD"},
            "timestamp": (later + timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
        }
        _post(port, "/v1/track", order)
        accepted = time.monotonic()
        credit = f"""
            SELECT channel, round(sum(credit), 6), round(sum(revenue_credit), 4)
            FROM {db}.attribution_current WHERE model = 'linear'
            GROUP BY channel ORDER BY channel
        """
        expected = [["email", "0.5", "40"], ["paid_search", "0.5", "40"]]
        deadline = accepted + 15.0
        got: list[list[str]] = []
        while time.monotonic() < deadline:
            stack.check_alive()
            got = stack.query(credit)
            if got == expected:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - accepted
        assert got == expected, f"after {seconds:.1f}s the order's linear credit is {got}"
        journey = stack.query(
            f"SELECT arrayStringConcat(path, '>'), revenue FROM {db}.journeys FINAL WHERE converted"
        )
        assert journey == [["paid_search>email", "80"]]
    finally:
        stack.stop()
    record_figures("live", {"order_credited_after_s": round(seconds, 2)})


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False
