"""`journeys reset` and `journeys status`: the local data folders of the embedded stack."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cli.main import main
from pipeline.broker import DataLock


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)
    found = {
        "broker": tmp_path / "b",
        "worker": tmp_path / "w",
        "clickhouse": tmp_path / "ch",
        "demo": tmp_path / "var" / "demo",
    }
    monkeypatch.setenv("JOURNEYS_BROKER_DIR", str(found["broker"]))
    monkeypatch.setenv("JOURNEYS_DATA_DIR", str(found["worker"]))
    monkeypatch.setenv("JOURNEYS_CLICKHOUSE_URL", f"chdb://{found['clickhouse']}")
    monkeypatch.setenv("JOURNEYS_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing answers
    for path in found.values():
        path.mkdir(parents=True)
        (path / "data").write_bytes(b"x" * 5000)
    return found


def test_reset_asks_first_and_keeps_everything_without_yes(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    assert main(["reset"]) == 1
    assert all(path.exists() for path in folders.values())


def test_reset_yes_removes_every_data_folder(folders: dict[str, Path]) -> None:
    assert main(["status"]) == 0
    assert main(["reset", "--yes"]) == 0
    assert not any(path.exists() for path in folders.values())
    assert main(["reset", "--yes"]) == 0  # nothing left: still fine


def test_reset_refuses_while_a_broker_holds_the_folder(folders: dict[str, Path]) -> None:
    lock = DataLock(folders["broker"])
    lock.acquire()
    try:
        assert main(["reset", "--yes"]) == 1
    finally:
        lock.release()
    assert all(path.exists() for path in folders.values())
