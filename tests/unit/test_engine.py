"""The batch engine without a broker: state tables on real rocksdict stores, the
partition alignment, and the checkpoint protocol (docs/reliability.md) on the in-memory
broker of the simulation (tests/unit/sim): tagged changelogs, markers, fences against
zombies, restores that seek the input, poison messages. The engine on the real broker
is covered by the integration tests (every worker there runs it, including kill -9 and
rebalances in test_faults)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.agents.aligner import Aligner
from pipeline.agents.checkpoint import CHECKPOINT_HEADER, Mark, checkpoint_tag, parse_tag
from pipeline.agents.engine import Engine, EngineError, Stage, StateTable
from pipeline.agents.messages import Out
from pipeline.agents.output import OutputError, OutputProducer
from pipeline.settings import Settings
from tests.unit.kafka_fakes import FakeConsumer as _Consumer
from tests.unit.kafka_fakes import FakeMessage as _Msg
from tests.unit.kafka_fakes import FakeProducer
from tests.unit.sim.broker import SimBroker, SimClients, SimProducer

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
    table.save(1, changes[1], Mark(("w", 3), 41, 7, {"old": 2}))
    assert table.take_changes() == {}
    assert table.stored_mark(1) == Mark(("w", 3), 41, 7, {"old": 2})

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


# -- Aligner -------------------------------------------------------------------------


def test_the_aligner_takes_the_oldest_head_and_keeps_each_partition_in_order() -> None:
    aligner = Aligner()
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
    aligner = Aligner(max_wait_s=0.05)
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


# -- Engine: the checkpoint protocol on the in-memory broker ----------------------------


class Crash(Exception):
    """The worker process dies at a checkpoint step."""


def _crash_at(step: str) -> Any:
    def fault(reached: str) -> None:
        if reached == step:
            raise Crash(step)

    return fault


def _broker() -> SimBroker:
    broker = SimBroker()
    for topic, n in (("in", 2), ("out", 2), ("dead", 1), ("snap", 1)):
        broker.create(topic, n)
    return broker


def _dead(reason: str, raw: bytes, topic: str, partition: int, offset: int) -> Out:
    return Out("dead", raw, f"{topic}[{partition}]@{offset}: {reason}".encode())


class Worker:
    """An engine counting the keys of ``in`` (table ``counts``); ``who`` records which
    worker processed it, ``poison`` raises, ``huge`` returns a 2 MB output."""

    def __init__(self, broker: SimBroker, root: Path, name: str) -> None:
        self.name = name
        self.producer = SimProducer(broker)
        self.clients = SimClients(broker, random.Random(7))
        settings = Settings(data_dir=root, worker_id="w")
        output = OutputProducer({}, producer=self.producer)
        self.engine = Engine(
            settings, output, commit_interval_s=3600, clients=self.clients, dead_letter=_dead
        )
        self.counts = self.engine.table("counts", partitions=2)
        self.engine.stage(Stage("in", self.step, (self.counts,)))
        self.engine.start()

    def step(self, value: bytes, *_rest: Any) -> list[Out]:
        key = value.decode()
        if key == "poison":
            self.counts["poisoned"] = True
            raise ValueError("cannot use this")
        if key == "huge":
            return [Out("out", b"k", b"x" * 2_000_000)]
        if key == "who":
            self.counts["who"] = self.name
            return []
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        return [Out("out", key.encode(), str(n).encode(), partition=0)]

    def drain(self) -> None:
        for _ in range(20):
            self.engine.poll()

    def state(self, key: str, partition: int = 0) -> Any:
        self.counts.partition = partition
        return self.counts.get(key)

    def kill(self) -> None:
        self.producer.crash(random.Random(1))
        for consumer in self.clients.made:
            consumer.kill()
        self.counts.close_all()


def _send(broker: SimBroker, *values: bytes, partition: int = 0) -> None:
    for value in values:
        broker.append("in", partition, None, value, None)


def _values(broker: SimBroker, topic: str) -> list[bytes]:
    return [m.value() or b"" for m in broker.messages(topic)]


def test_a_checkpoint_tags_changelogs_then_marks_the_input_and_commits(tmp_path: Path) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path, "a")
    _send(broker, b"a", b"a", b"b")
    w.drain()
    assert broker.messages("out") == []  # outputs leave at the checkpoint's flush at the latest
    w.engine.checkpoint()
    assert _values(broker, "out") == [b"1", b"2", b"1"]
    task = w.engine._tasks[("in", 0)]
    changelog = [  # one record per changed key (after the fence of a first restore)
        m for m in broker.messages("w-engine-counts-changelog") if m.key() != b"\x00fence"
    ]
    assert [(m.key(), m.value()) for m in changelog] == [(b"a", b"2"), (b"b", b"1")]
    assert all(parse_tag(m.headers()) == (task.writer, 1) for m in changelog)
    fence, marker = [json.loads(m.value() or b"") for m in broker.topics["w-engine-checkpoints"][0]]
    assert fence == {"kind": "fence", "writer": task.writer}
    assert marker["kind"] == "marker" and marker["seq"] == 1 and marker["input"] == 3
    assert marker["changelogs"] == {"counts": max(m.offset() for m in changelog)}
    assert broker.committed["w-engine"][("in", 0)] == 3
    mark = w.counts.stored_mark(0)
    assert mark is not None and mark.marker == (task.writer, 1)


@pytest.mark.parametrize("wipe", [False, True])
@pytest.mark.parametrize("step", ["changelogs", "flushed", "marking", "marked", "stored"])
def test_a_crash_at_any_checkpoint_step_resumes_from_the_last_marker(
    tmp_path: Path, step: str, wipe: bool
) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path / "a", "a")
    _send(broker, b"a", b"a", b"b")
    w.drain()
    w.engine.checkpoint()
    _send(broker, b"a", b"b")
    w.drain()
    w.engine.fault = _crash_at(step)
    with pytest.raises(Crash):
        w.engine.checkpoint()
    w.kill()
    again = Worker(broker, tmp_path / ("b" if wipe else "a"), "b")
    again.drain()
    again.engine.checkpoint()
    assert (again.state("a"), again.state("b")) == (3, 2)  # each message counted once
    outs = [(m.key(), m.value()) for m in broker.messages("out")]
    assert outs[-2:] == [(b"a", b"3"), (b"b", b"2")]  # the same outputs, at least once
    assert set(outs) == {(b"a", b"1"), (b"a", b"2"), (b"b", b"1"), (b"a", b"3"), (b"b", b"2")}
    if step in ("marked", "stored"):
        # Past its marker the input is not processed again, though the commit was lost.
        assert len(outs) == 5
    assert broker.committed["w-engine"][("in", 0)] == 5


def test_a_zombie_writes_nothing_that_a_restore_applies(tmp_path: Path) -> None:
    broker = _broker()
    zombie = Worker(broker, tmp_path / "a", "zombie")
    _send(broker, b"a")
    zombie.drain()
    zombie.engine.checkpoint()
    successor = Worker(broker, tmp_path / "b", "successor")
    successor.drain()  # takes the partitions over: fences them, restores a=1
    assert successor.state("a") == 1
    _send(broker, b"who", b"a")
    zombie.drain()  # paused past its session, it never heard of the successor
    zombie.engine.checkpoint()  # changelog and marker after the fence; the commit fails
    assert zombie.state("who") == "zombie"
    successor.kill()
    third = Worker(broker, tmp_path / "b", "third")
    third.drain()
    third.engine.checkpoint()
    assert (third.state("who"), third.state("a")) == ("third", 2)
    third.engine.close()
    # The zombie's own store is ahead of every valid marker: rebuilt when it comes back.
    zombie.kill()
    back = Worker(broker, tmp_path / "a", "back")
    back.drain()
    assert (back.state("who"), back.state("a")) == ("third", 2)


def test_a_failing_step_is_a_dead_letter_and_its_writes_are_undone(tmp_path: Path) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path, "a")
    _send(broker, b"a", b"poison", b"huge", b"a")
    w.drain()
    w.engine.checkpoint()
    assert _values(broker, "out") == [b"1", b"2"]
    dead = [m.value() or b"" for m in broker.messages("dead")]
    assert dead[0] == b"in[0]@1: ValueError: cannot use this"
    assert b"in[0]@2: OutputTooLarge: an output to out of 2000001 bytes" in dead[1]
    assert w.state("poisoned") is None and w.state("a") == 2
    assert w.engine.counters.dead_letters == 2


def test_an_unreadable_changelog_record_is_skipped_on_restore(tmp_path: Path) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path / "a", "a")
    _send(broker, b"a")
    w.drain()
    w.engine.checkpoint()
    tag = [(CHECKPOINT_HEADER, checkpoint_tag(w.engine._tasks[("in", 0)].writer, 2))]
    broker.append("w-engine-counts-changelog", 0, b"bad", b"{oops", tag)
    _send(broker, b"a")
    w.drain()
    w.engine.checkpoint()  # its marker covers the bad record
    w.kill()
    again = Worker(broker, tmp_path / "b", "b")
    again.drain()
    assert again.state("a") == 2 and again.state("bad") is None
    assert again.engine.counters.skipped_changelog == 1


def test_a_followed_record_that_cannot_be_used_is_a_dead_letter(tmp_path: Path) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path, "a")
    used: list[bytes] = []

    def apply(msg: Any) -> None:
        if msg.value() == b"bad":
            raise ValueError("unusable snapshot")
        used.append(msg.value())

    w.engine.follow("snap", apply)
    w.engine._start_follower()
    broker.append("snap", 0, b"m", b"bad", None)
    broker.append("snap", 0, b"m", b"good", None)
    w.drain()
    w.engine.checkpoint()
    assert used == [b"good"]
    assert _values(broker, "dead") == [b"snap[0]@0: ValueError: unusable snapshot"]


def test_nothing_is_marked_or_committed_when_an_output_is_lost(tmp_path: Path) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path, "a")
    _send(broker, b"a")
    w.drain()
    producer = FakeProducer([])
    producer.fail = True
    w.engine.output._producer = producer
    with pytest.raises(OutputError, match="broker down"):
        w.engine.checkpoint()
    w.engine.output._producer = w.producer  # the broker is back: still nothing is marked
    with pytest.raises(EngineError, match="lost earlier"):
        w.engine.checkpoint()
    w.engine.close()  # no checkpoint on the way out either
    markers = broker.messages("w-engine-checkpoints")
    assert {json.loads(m.value() or b"")["kind"] for m in markers} == {"fence"}
    assert "w-engine" not in broker.committed


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
        OutputProducer({}, producer=FakeProducer(log)),
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


def test_a_changelog_written_before_markers_is_restored_and_written_again(
    tmp_path: Path,
) -> None:
    broker = _broker()
    broker.create("w-engine-counts-changelog", 2)
    broker.append("w-engine-counts-changelog", 0, b"a", b"5", None)  # no tag: an old engine
    broker.append("w-engine-counts-changelog", 0, b"\x00fence", None, None)
    broker.append("w-engine-counts-changelog", 0, b"b", b"7", None)
    w = Worker(broker, tmp_path / "a", "a")
    w.drain()
    assert (w.state("a"), w.state("b")) == (5, 7)
    _send(broker, b"a")
    w.drain()
    w.engine.checkpoint()  # every restored key again, tagged, under a marker
    w.kill()
    again = Worker(broker, tmp_path / "b", "b")
    again.drain()
    assert (again.state("a"), again.state("b")) == (6, 7)


def test_failures_in_a_row_stop_the_engine_instead_of_dead_lettering_everything(
    tmp_path: Path,
) -> None:
    broker = _broker()
    w = Worker(broker, tmp_path, "a")
    w.engine.max_consecutive_failures = 3
    _send(broker, b"poison", b"a", b"poison", b"poison", b"poison")
    w.drain()  # a poison, a good message, three poisons in a row: dead letters, and on
    assert w.engine.counters.dead_letters == 4
    _send(broker, b"poison")
    with pytest.raises(EngineError, match="4 messages failed in a row"):
        w.drain()
