"""Bots through the real pipeline: `journeys generate`'s bots (``bot-NNNN``) are stored
flagged in ``touchpoints``, and appear in no journey and no learned path; nobody else is
flagged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.stack import SinkService, spawn, stop_process
from connectors.evaluation import GROUND_TRUTH, read_ground_truth
from connectors.generate import generate
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_end_to_end import replay, scalar, wait_for

RULES = """
[journeys]
inactivity = "2d"
"""


@pytest.mark.timeout(240)
def test_generated_bots_are_flagged_and_make_no_journey(
    stack_settings: Settings, tmp_path: Path
) -> None:
    # A short inactivity window closes the bots' journeys within the sample, so that
    # a bot journey would show if the journey stage let bots in.
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    cfg = stack_settings.model_copy(update={"rules_file": rules})
    db = cfg.clickhouse_database
    gen = generate(tmp_path / "sample", people=40, days=20, seed=5, malformed_share=0.0)
    assert gen.identity["bots"] >= 4
    truth = read_ground_truth(tmp_path / "sample" / GROUND_TRUTH)
    bot_ids = {k.split(":", 1)[1] for k, owner in truth.items() if owner.startswith("bot-")}

    ensure_topics(cfg)
    service = SinkService(cfg, serve_queries=False).start()
    worker = spawn(["worker"], env=settings_env(cfg))
    try:
        stats = replay(cfg, service, tmp_path / "sample" / "segment.jsonl")
        assert stats.rejected == 0
        wait_for(
            lambda: (
                scalar(service, f"SELECT count() FROM {db}.touchpoints FINAL") >= stats.touchpoints
            ),
            150,
            "the replay in ClickHouse",
            worker,
        )
        rows = service.query(
            f"SELECT identifier_values[indexOf(identifier_types, 'anonymous_id')], is_bot, "
            f"person_id FROM {db}.touchpoints FINAL"
        )[1]
        flagged = {anon for anon, is_bot, _ in rows if is_bot}
        assert flagged == bot_ids, "every bot flagged, and no one else"
        bot_persons = {person for _, is_bot, person in rows if is_bot}
        human_persons = {person for _, is_bot, person in rows if not is_bot}
        assert bot_persons and not bot_persons & human_persons

        # The journeys of the humans close (their null paths expire after 2 days of
        # event time); by then a bot's would have closed too.
        def journeys_done() -> bool:
            return scalar(service, f"SELECT count() FROM {db}.journeys FINAL") > 10

        wait_for(journeys_done, 90, "journeys in ClickHouse", worker)
        time.sleep(2.0)  # the sink's next batches
        persons = {r[0] for r in service.query(f"SELECT person_id FROM {db}.journeys FINAL")[1]}
        assert persons & human_persons
        assert not persons & bot_persons, "a bot made a journey (and a learned path)"
        credited = {
            r[0] for r in service.query(f"SELECT DISTINCT person_id FROM {db}.attribution")[1]
        }
        assert not credited & bot_persons
    finally:
        stop_process(worker)
        service.stop()
