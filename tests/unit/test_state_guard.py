"""The worker state is bound to the broker it was built with (pipeline.state_guard)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.state_guard import MARKER, StateGuardError, check_state, has_state


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "worker", kafka_bootstrap="127.0.0.1:9")


def test_the_first_start_records_the_broker(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    check_state(cfg, "journeys-aaa")
    assert json.loads((cfg.data_dir / MARKER).read_text())["cluster_id"] == "journeys-aaa"
    assert not has_state(cfg.data_dir)  # the record alone is no state
    check_state(cfg, "journeys-aaa")  # the same broker again: fine


def test_state_of_another_broker_is_refused_and_kept(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    check_state(cfg, "journeys-aaa")
    table = cfg.data_dir / "engine" / "journey-states" / "0"
    table.mkdir(parents=True)
    (table / "data").write_bytes(b"state")
    with pytest.raises(StateGuardError, match=r"broker's data is gone.*journeys reset"):
        check_state(cfg, "journeys-bbb")
    assert (table / "data").read_bytes() == b"state"
    assert "journeys-aaa" in (cfg.data_dir / MARKER).read_text()


def test_a_record_without_state_follows_the_new_broker(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    check_state(cfg, "journeys-aaa")
    check_state(cfg, "journeys-bbb")
    assert "journeys-bbb" in (cfg.data_dir / MARKER).read_text()


def test_state_from_before_the_record_is_adopted(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    (cfg.data_dir / "engine").mkdir(parents=True)
    check_state(cfg, "journeys-aaa")
    assert "journeys-aaa" in (cfg.data_dir / MARKER).read_text()
