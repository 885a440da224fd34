"""What the checkpoint log lets the janitor delete (pipeline.agents.snapshots.floors),
and the renewed fences a snapshot writes."""

from __future__ import annotations

from pathlib import Path

from pipeline.agents.checkpoint import Replay, StateTable, Task, fence_record, marker_record
from pipeline.agents.snapshots import (
    SnapshotPolicy,
    due,
    floors,
    newest_floor,
    parse_snapshots,
    renewed_fence,
    snapshot_entry,
)

SNAP = {"states": snapshot_entry("states-changelog", 1, 40, 2)}


def log(*values: bytes, key: bytes = b"in") -> list[tuple[int, bytes | None, bytes | None]]:
    return [(offset, key, value) for offset, value in enumerate(values)]


def test_a_valid_snapshot_gives_the_changelog_and_the_log_floors() -> None:
    records = log(
        fence_record("w1"),
        marker_record("w1", 1, 5, {"states": 39}),
        renewed_fence("w1"),
        marker_record("w1", 2, 9, {"states": 60}, SNAP),
    )
    assert floors(records) == {("states-changelog", 1): 40, None: 2}


def test_no_snapshot_no_cut() -> None:
    records = log(fence_record("w1"), marker_record("w1", 1, 5, {"states": 39}))
    assert floors(records) == {}


def test_a_zombies_snapshot_moves_nothing() -> None:
    """w1 was fenced by w2: w1's renewed fence and marker after it are ignored."""
    records = log(
        fence_record("w1"),
        marker_record("w1", 1, 5, {"states": 39}),
        fence_record("w2"),
        renewed_fence("w1"),
        marker_record("w1", 2, 9, {"states": 60}, SNAP),
    )
    assert floors(records) == {}
    replay = Replay()
    for _offset, _key, value in records:
        replay.apply(value)
    assert replay.current == "w2" and replay.ignored == 2


def test_a_log_cut_at_a_renewed_fence_names_its_writer() -> None:
    """After the janitor's cut the log starts at the renewed fence: it makes its
    writer the current one, whose markers then count."""
    replay = Replay()
    replay.apply(renewed_fence("w1"))
    replay.apply(marker_record("w1", 3, 9, {"states": 60}, SNAP))
    assert replay.current == "w1" and replay.marker == ("w1", 3)
    assert parse_snapshots(replay.last and replay.last.get("snapshots")) == SNAP


def test_the_log_is_cut_only_when_every_stage_has_its_snapshots() -> None:
    records = [
        *log(fence_record("w1"), renewed_fence("w1")),
        *[(o + 2, k, v) for o, k, v in log(fence_record("v1"), key=b"other")],
        (3, b"other", marker_record("v1", 1, 3, {"paths": 7})),
        (4, b"in", marker_record("w1", 1, 9, {"states": 60}, SNAP)),
    ]
    assert floors(records) == {("states-changelog", 1): 40}


def test_a_table_is_due_once_its_changelog_outgrows_its_live_keys(tmp_path: Path) -> None:
    table = StateTable("states", "states-changelog", 1, tmp_path)
    table.open(0)
    table.partition = 0
    for n in range(10):
        table[f"k{n}"] = n
    task = Task("in", 0, [(table, 0)], writer="w1")
    policy = SnapshotPolicy(min_records=15, factor=2.0)
    task.reached["states"] = 13  # 14 records written: under min_records
    assert not due(task, table, 0, policy)
    task.reached["states"] = 17  # 18 records, 10 live keys: not twice as many
    assert not due(task, table, 0, policy)
    assert task.snapshot_checked["states"] == 21
    task.reached["states"] = 24  # 25 records > 2 x 10 live keys
    assert due(task, table, 0, policy)
    assert not due(task, table, 0, SnapshotPolicy(min_records=0))
    table.close_all()


def test_an_old_table_gets_a_snapshot_so_that_the_log_can_be_cut(tmp_path: Path) -> None:
    """A table written once per key never outgrows its keys: after max_age markers it
    gets a snapshot all the same (the checkpoint log needs every table's), and then
    again only if it was written since."""
    table = StateTable("seen", "seen-changelog", 1, tmp_path)
    table.open(0)
    table.partition = 0
    for n in range(10):
        table[f"k{n}"] = n
    task = Task("in", 0, [(table, 0)], writer="w1")
    policy = SnapshotPolicy(min_records=1000, max_age=5)
    task.reached["seen"] = 9
    task.snapshot_age["seen"] = 4
    assert not due(task, table, 0, policy)
    task.snapshot_age["seen"] = 5
    assert due(task, table, 0, policy)  # no snapshot yet
    task.snapshots["seen"] = snapshot_entry("seen-changelog", 0, 10, 3)
    task.reached["seen"] = 19  # the snapshot: 10 records, nothing since
    task.snapshot_age["seen"] = 5
    assert not due(task, table, 0, policy)
    assert task.snapshot_age["seen"] == 0
    task.reached["seen"], task.snapshot_age["seen"] = 20, 5  # one write since
    assert due(task, table, 0, policy)
    table.close_all()


def test_of_the_model_snapshots_each_models_newest_is_kept() -> None:
    seen: dict[bytes, int] = {}
    assert newest_floor([], seen) is None
    first = [(0, b"markov", b"1"), (1, b"shapley", b"1"), (2, b"markov", b"2")]
    assert newest_floor(first, seen) == 1  # shapley's only snapshot
    assert newest_floor([(3, b"shapley", b"2")], seen) == 2  # read piece by piece
