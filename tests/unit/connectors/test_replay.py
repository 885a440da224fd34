"""Replay reads JSONL/CSV (gzip too) and accounts for every line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from connectors.base import ConnectorError, Rejected
from connectors.generate import generate
from connectors.replay import expand_paths, file_format, replay_files
from connectors.segment import SegmentSource
from pipeline.core.model import Touchpoint


def run(paths: list[Path]) -> tuple[list[Touchpoint], list[Rejected], int]:
    good: list[Touchpoint] = []
    bad: list[Rejected] = []
    stats = replay_files(paths, SegmentSource(), good.append, bad.append)
    assert stats.touchpoints == len(good) and stats.rejected == len(bad)
    return good, bad, stats.records


def page(i: int) -> str:
    return json.dumps(
        {
            "type": "page",
            "anonymousId": f"a{i}",
            "messageId": f"m{i}",
            "timestamp": "2026-10-01T10:00:00Z",
        }
    )


def test_every_line_is_a_touchpoint_or_a_dead_letter_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(
        "\n".join(
            [page(1), '{"type": "page"', "", page(2), '{"type":"x","anonymousId":"a"}']
        ).encode()
        + b"\n\xff\xfe\n"
    )
    good, bad, records = run([path])
    assert len(good) == 2
    assert [r.location for r in bad] == [f"{path}:2", f"{path}:5", f"{path}:6"]
    assert "invalid JSON" in bad[0].error
    assert bad[1].error.startswith("type:")
    assert "UTF-8" in bad[2].error
    assert records == len(good) + len(bad)


def test_gzip_and_globs(tmp_path: Path) -> None:
    for n in range(2):
        with gzip.open(tmp_path / f"day{n}.jsonl.gz", "wt") as fh:
            fh.write(page(n) + "\n")
    paths = expand_paths([str(tmp_path / "day*.jsonl.gz")])
    good, bad, _ = run(paths)
    assert (len(good), len(bad)) == (2, 0)


def test_generated_sample_accounts_for_every_record(tmp_path: Path) -> None:
    stats = generate(tmp_path, people=40, days=10, seed=1, malformed_share=0.05)
    good, bad, records = run([tmp_path / "segment.jsonl"])
    assert records == stats.messages
    assert len(bad) == stats.malformed > 0
    assert len(good) + len(bad) == records


def test_unknown_formats_and_missing_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="unknown format"):
        file_format(tmp_path / "log.txt")
    with pytest.raises(ConnectorError, match="no such file"):
        expand_paths([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConnectorError, match="no file matches"):
        expand_paths([str(tmp_path / "*.jsonl")])
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConnectorError, match="reads jsonl, not csv"):
        run([tmp_path / "x.csv"])


def test_files_of_several_sources_are_merged_in_event_time(tmp_path: Path) -> None:
    from connectors.generate import generate
    from connectors.registry import SOURCES, get_source
    from connectors.replay import replay_files, source_of_file

    gen = generate(tmp_path, people=25, days=10, seed=4, malformed_share=0.02)
    paths = sorted(p for p in tmp_path.iterdir() if p.suffix in (".jsonl", ".csv"))
    paths = [p for p in paths if not p.name.endswith("truth.csv")]
    names = [source_of_file(p, SOURCES) for p in paths]
    assert sorted(names) == sorted(SOURCES)
    emitted: list[Touchpoint] = []
    rejected: list[Rejected] = []
    stats = replay_files(paths, [get_source(n) for n in names], emitted.append, rejected.append)
    assert stats.records == sum(gen.files.values())
    assert stats.touchpoints == len(emitted) and stats.rejected == len(rejected) > 0
    assert {tp.source for tp in emitted} == set(SOURCES)
    times = [tp.occurred_at for tp in emitted]
    # every file is in time order, so the merge is too (a record's touchpoints may
    # straddle a few seconds: an interaction's start and end)
    late = [b for a, b in zip(times, times[1:], strict=False) if (a - b).total_seconds() > 3600]
    assert not late
    # one source after the other is what the merge avoids
    one_by_one: list[Touchpoint] = []
    for path, name in zip(paths, names, strict=True):
        replay_files([path], get_source(name), one_by_one.append, lambda _r: None)
    jumps = [
        b
        for a, b in zip(one_by_one, one_by_one[1:], strict=False)
        if (a.occurred_at - b.occurred_at).total_seconds() > 86400
    ]
    assert jumps


def test_the_source_of_a_file_is_read_from_its_name() -> None:
    from connectors.registry import SOURCES
    from connectors.replay import source_of_file

    assert source_of_file(Path("var/pos.csv"), SOURCES) == "pos"
    assert source_of_file(Path("sendgrid-2026-10.jsonl.gz"), SOURCES) == "sendgrid"
    with pytest.raises(ConnectorError, match="starts with none of"):
        source_of_file(Path("possibly.csv"), SOURCES)
