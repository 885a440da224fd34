"""The batch engine without a broker: state tables on real rocksdict stores, the
partition alignment, and the order of a checkpoint (changelogs, acks, local store,
offsets). The engine on the real broker is covered by the integration tests (every
worker there runs it, including kill -9 and rebalances in test_faults)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.agents.engine import Engine, EngineError, Stage, StateTable, _Aligner
from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.agents.output import OutputError, OutputProducer
from pipeline.settings import Settings
from tests.unit.kafka_fakes import FakeConsumer as _Consumer
from tests.unit.kafka_fakes import FakeMessage as _Msg
from tests.unit.kafka_fakes import FakeProducer as _Producer

# -- StateTable -----------------------------------------------------------------------


def test_state_table_reads_its_writes_and_keeps_them_after_a_save(tmp_path: Path) -> None:
    table = StateTable("t", "t-changelog", 4, tmp_path)
    table.open(1)
    table.partition = 1
    table["a"] = {"n": 1}
    table["b"] = [1, 2]
    got = table["a"]
    got["n"] = 99  # a read is a copy: the table changes only through a write
    assert table["a"] == {"n": 1}
    del table["b"]
    assert "b" not in table and table.get("b", "none") == "none"
    assert sorted(table) == ["a"] and len(table) == 1

    changes = table.take_changes()
    assert changes == {1: {"a": b'{"n":1}', "b": None}}
    table.save(1, changes[1], offset=41)
    assert table.take_changes() == {}
    assert table.stored_offset(1) == 41

    table.close(1)  # the store on disk keeps it
    assert table.get("a") is None  # not held: nothing to read
    table.open(1)
    assert table["a"] == {"n": 1} and list(table) == ["a"]  # the offset key is not a key


def test_state_table_partitions_are_separate_and_unheld_ones_cannot_be_written(
    tmp_path: Path,
) -> None:
    table = StateTable("t", "t-changelog", 4, tmp_path)
    table.open(0)
    table["x"] = 1
    table.partition = 2
    assert "x" not in table and table.get("x") is None
    with pytest.raises(EngineError, match="partition 2 is not held"):
        table["x"] = 2
    with pytest.raises(KeyError):
        table["x"]


# -- _Aligner -------------------------------------------------------------------------


def test_the_aligner_takes_the_oldest_head_and_keeps_each_partition_in_order() -> None:
    aligner = _Aligner()
    aligner.assign([0, 1, 2])
    for msg in [
        _Msg("t", 0, 0, ts=10),
        _Msg("t", 0, 1, ts=40),
        _Msg("t", 1, 0, ts=20),
        _Msg("t", 1, 1, ts=5),  # out of time order within its partition: stays second
        _Msg("t", 2, 0, ts=30),
    ]:
        aligner.add(msg)
    got = [(m.partition(), m.offset()) for m in aligner.ready(lambda _p: False)]
    assert got == [(0, 0), (1, 0), (1, 1), (2, 0), (0, 1)]
    assert aligner.count == 0


def test_the_aligner_waits_for_a_partition_that_is_behind_but_not_forever() -> None:
    aligner = _Aligner(max_wait_s=0.05)
    aligner.assign([0, 1])
    aligner.add(_Msg("t", 0, 0, ts=10))
    behind = {1}
    assert list(aligner.ready(lambda p: p in behind)) == []  # partition 1 has data coming
    aligner.add(_Msg("t", 1, 0, ts=5))
    got = [(m.partition(), m.offset()) for m in aligner.ready(lambda p: p in behind)]
    assert got == [(1, 0)]  # the oldest first; then partition 1 is empty and behind again
    time.sleep(0.06)
    assert [m.offset() for m in aligner.ready(lambda p: p in behind)] == [0]  # waited enough
    aligner.add(_Msg("t", 1, 1, ts=50))
    aligner.release([1])
    assert aligner.count == 0


# -- Engine ---------------------------------------------------------------------------


def _engine(tmp_path: Path, log: list[str], batches: list[list[_Msg]]) -> Engine:
    settings = Settings(data_dir=tmp_path, worker_id="w")
    producer = _Producer(log)
    engine = Engine(
        settings,
        OutputProducer({}, producer=producer),
        commit_interval_s=3600,
        consumer=_Consumer(log, batches),
    )
    counts = engine.table("counts", partitions=2)

    def count(
        value: bytes, topic: str, partition: int, offset: int, up: bytes | None, _c: bytes | None
    ) -> list[Out]:
        key = value.decode()
        counts[key] = counts.get(key, 0) + 1
        return [Out("out", key.encode(), f"{key}={counts[key]} via {up!r}".encode())]

    engine.stage(Stage("in", count, (counts,)))
    counts.open(0)
    counts.open(1)
    return engine


def test_a_checkpoint_sends_changelogs_waits_for_acks_then_saves_and_commits(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    hdr = [(UPSTREAM_HEADER, b"touchpoints[3]")]
    batch = [_Msg("in", 1, 7, value=b"a", headers=hdr), _Msg("in", 1, 8, value=b"a")]
    batch.append(_Msg("in", 0, 2, value=b"b"))
    engine = _engine(tmp_path, log, [batch])
    assert engine.poll() == 3
    assert log == [
        "produce out[0] b'a'=b\"a=1 via b'touchpoints[3]'\"",
        "produce out[0] b'a'=b'a=2 via None'",
        "produce out[0] b'b'=b'b=1 via None'",
    ]
    log.clear()
    engine.checkpoint()
    # one changelog message per changed key (a was written twice), then the acks,
    # then the offsets: the next message of each partition
    assert log == [
        "produce w-engine-counts-changelog[1] b'a'=b'2'",
        "produce w-engine-counts-changelog[0] b'b'=b'1'",
        "flush",
        "commit in[1]@9,in[0]@3",
    ]
    counts = engine.tables["counts"]
    assert counts.stored_offset(0) == 0 and counts.stored_offset(1) == 0
    log.clear()
    engine.checkpoint()
    assert log == []  # nothing new: nothing sent, nothing committed


def test_nothing_is_saved_or_committed_when_an_output_is_lost(tmp_path: Path) -> None:
    log: list[str] = []
    engine = _engine(tmp_path, log, [[_Msg("in", 0, 0, value=b"a")]])
    engine.poll()
    assert isinstance(engine.output._producer, _Producer)
    engine.output._producer.fail = True
    with pytest.raises(OutputError, match="broker down"):
        engine.checkpoint()
    engine.output._producer.fail = False  # the broker is back: still nothing is committed
    with pytest.raises(EngineError, match="lost earlier"):
        engine.checkpoint()
    engine.close()  # no checkpoint on the way out either
    assert not any(line.startswith("commit") for line in log)
    assert engine.tables["counts"].stored_offset(0) is None


def test_an_aligned_topic_waits_for_a_partition_until_its_end_is_reported(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    settings = Settings(data_dir=tmp_path, worker_id="w")
    batches = [
        [_Msg("tp", 0, 0, ts=10, value=b"p0-a"), _Msg("tp", 0, 1, ts=30, value=b"p0-b")],
        [_Msg("tp", 1, 0, ts=20, value=b"p1-a")],
        [_Msg("tp", 1, 0, eof=True)],
    ]
    engine = Engine(
        settings,
        OutputProducer({}, producer=_Producer(log)),
        commit_interval_s=3600,
        consumer=_Consumer(log, batches),
    )
    seen: list[bytes] = []

    def step(value: bytes, *_rest: Any) -> list[Out]:
        seen.append(value)
        return []

    engine.stage(Stage("tp", step, aligned=True))
    engine._aligners["tp"].assign([0, 1])
    assert engine.poll() == 0  # partition 1 may hold older messages: wait for it
    assert engine.poll() == 2  # it did: the oldest first, until partition 1 is empty again
    assert seen == [b"p0-a", b"p1-a"]
    assert engine.poll() == 1  # partition 1 reported its end: p0-b need not wait
    assert seen == [b"p0-a", b"p1-a", b"p0-b"]
