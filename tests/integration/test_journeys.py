"""60 days of multi-channel traffic through the real broker, worker and ClickHouse engine:
journeys, null paths, and the credit of all eight models for every conversion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.generate import generate
from pipeline.core.attribution import MODELS
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_end_to_end import replay, scalar

CREDIT_SUMS = """
SELECT a.conversion_event_id, a.model, sum(a.credit) AS credit, sum(a.revenue_credit) AS revenue,
       any(j.revenue) AS journey_revenue
FROM {db}.attribution_current AS a
INNER JOIN (SELECT conversion_event_id, revenue FROM {db}.journeys FINAL WHERE converted)
      AS j USING (conversion_event_id)
GROUP BY a.conversion_event_id, a.model
"""


@pytest.mark.timeout(240)
def test_sixty_days_make_journeys_null_paths_and_credit_that_sums_to_one(
    stack_settings: Settings, tmp_path: Path
) -> None:
    cfg = stack_settings.model_copy(update={"model_refit_every": 25})
    db = cfg.clickhouse_database
    gen = generate(tmp_path / "s", people=120, days=60, seed=11, malformed_share=0.0)
    assert gen.purchases > 20

    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    started = time.monotonic()
    try:
        stats = replay(cfg, service, tmp_path / "s" / "segment.jsonl")
        assert stats.rejected == 0
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - started < 180:
            assert worker.poll() is None, f"worker exited with {worker.returncode}"
            now = scalar(service, f"SELECT count() FROM {db}.attribution")
            if now != last:
                last, stable_since = now, time.monotonic()
            elif now > 0 and time.monotonic() - stable_since > 4:
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
        assert wall < 120, f"60 days of events took {wall:.0f}s of wall time"

        converted = scalar(service, f"SELECT count() FROM {db}.journeys FINAL WHERE converted")
        nulls = scalar(service, f"SELECT count() FROM {db}.journeys FINAL WHERE NOT converted")
        assert converted > 10
        assert nulls > 0
        sums = service.query(CREDIT_SUMS.format(db=db))[1]
        assert len(sums) == converted * len(MODELS)
        for conversion, model, credit, revenue, journey_revenue in sums:
            assert credit == pytest.approx(1.0, abs=1e-9), (conversion, model)
            assert revenue == pytest.approx(journey_revenue, abs=1e-6), (conversion, model)
        models = {r[0] for r in service.query(f"SELECT DISTINCT model FROM {db}.attribution")[1]}
        assert models == set(MODELS)
        learned = service.query(
            f"SELECT model, count() FROM {db}.attribution_models GROUP BY model ORDER BY model"
        )[1]
        assert [m for m, _ in learned] == ["markov", "shapley"]
        # Credit uses whichever snapshot the journey stage held at the conversion: the
        # bootstrap (linear) before the first one arrives, a published snapshot after. How
        # many of each depends on timing, but every version used must be one of those.
        used = {
            r[0]
            for r in service.query(
                f"SELECT DISTINCT model_version FROM {db}.attribution "
                "WHERE model IN ('markov', 'shapley')"
            )[1]
        }
        published = {
            r[0] for r in service.query(f"SELECT DISTINCT version FROM {db}.attribution_models")[1]
        }
        assert used, "no data-driven credit at all"
        assert used <= published | {"bootstrap"}, used - published
        paths = service.query(
            f"SELECT path, hops, touch_count FROM {db}.journeys FINAL WHERE converted LIMIT 50"
        )[1]
        assert all(len(p) == n and h <= max(n - 1, 0) for p, h, n in paths)
    finally:
        stop_process(worker)
        service.stop()
