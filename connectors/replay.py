"""``journeys replay``: publish log files of a source to Kafka.

Files are JSON Lines or CSV, optionally gzip-compressed (by their name: ``.jsonl``,
``.ndjson``, ``.json``, ``.csv``, each with an optional ``.gz``). Every line becomes
touchpoints or a dead letter whose location is ``file:line``; nothing is dropped.
"""

from __future__ import annotations

import csv
import glob
import gzip
import heapq
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from connectors.base import ConnectorError, Rejected, Source, lone_surrogate, map_record
from pipeline.core.model import Touchpoint

MAX_LINE_BYTES = 1_000_000


@dataclass
class ReplayStats:
    files: int = 0
    records: int = 0
    touchpoints: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def note(self, rej: Rejected) -> None:
        self.rejected += 1
        if len(self.errors) < 20:
            self.errors.append(f"{rej.location}: {rej.error}")


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Files named by *patterns* (globs allowed), in order, each once."""
    out: list[Path] = []
    for pattern in patterns:
        matches = (
            sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        )
        if not matches:
            raise ConnectorError(f"{pattern}: no file matches")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise ConnectorError(f"{path}: no such file")
            if path not in out:
                out.append(path)
    return out


def file_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise ConnectorError(f"{path}: unknown format; name it .jsonl, .ndjson, .json or .csv (.gz)")


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


Item = tuple[str, bytes, Any, str | None]  # location, raw bytes, parsed record, parse error


def iter_jsonl(
    path: Path, stream: IO[bytes], follow: Callable[[], bool] | None = None
) -> Iterator[Item]:
    lineno = 0
    while True:
        line = stream.readline()
        if not line:
            if follow is not None and follow():
                continue
            return
        lineno += 1
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        location = f"{path}:{lineno}"
        if len(raw) > MAX_LINE_BYTES:
            yield location, raw[:4096], None, f"line longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield location, raw, None, "not valid UTF-8"
        except json.JSONDecodeError as exc:
            yield location, raw, None, f"invalid JSON at column {exc.colno}: {exc.msg}"
        except RecursionError:
            yield location, raw[:4096], None, "JSON nested too deeply"
        else:
            if lone_surrogate(raw, parsed):
                yield (
                    location,
                    raw,
                    None,
                    "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)",
                )
            else:
                yield location, raw, parsed, None


def iter_csv(path: Path, stream: IO[bytes]) -> Iterator[Item]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except UnicodeDecodeError:
        yield f"{path}:1", b"", None, "header is not valid UTF-8"
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield f"{path}:{reader.line_num}", b"", None, "not valid UTF-8"
            return
        except csv.Error as exc:
            yield f"{path}:{reader.line_num}", b"", None, f"malformed CSV: {exc}"
            continue
        location = f"{path}:{reader.line_num}"
        raw = ",".join(row).encode("utf-8", "replace")
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield location, raw, None, f"expected {len(header)} columns, got {len(row)}"
            continue
        yield location, raw, dict(zip(header, row, strict=True)), None


class Throttle:
    """Sleep so that no more than *rate* events per second pass (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    def tick(self, n: int = 1) -> None:
        if not self.rate:
            return
        self.count += n
        ahead = self.count / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


@dataclass
class _Step:
    """One record of one file, mapped: its touchpoints or its rejection."""

    at: float  # event time of its touchpoints (epoch s); the file's last one for a rejection
    touchpoints: list[Touchpoint]
    rejected: Rejected | None
    done_bytes: int  # bytes of all files read so far, for the progress bar


def _steps(
    path: Path,
    source: Source,
    follow: Callable[[], bool] | None,
    done_before: int,
) -> Iterator[_Step]:
    fmt = file_format(path)
    if fmt not in source.formats:
        raise ConnectorError(
            f"{path}: source {source.name!r} reads {', '.join(source.formats)}, not {fmt}"
        )
    last_at = float("-inf")
    with _open(path) as stream:
        raw_stream: Any = getattr(stream, "fileobj", stream)
        items = iter_jsonl(path, stream, follow) if fmt == "jsonl" else iter_csv(path, stream)
        for location, raw, record, error in items:
            received = datetime.now(UTC)
            if error is not None:
                rejected: Rejected | None = Rejected(source.name, error, raw, location)
                touchpoints: list[Touchpoint] = []
            else:
                mapped = map_record(source, record, raw, received, location)
                rejected, touchpoints = mapped.rejected, mapped.touchpoints
            if touchpoints:
                last_at = max(last_at, min(tp.occurred_at.timestamp() for tp in touchpoints))
            yield _Step(last_at, touchpoints, rejected, done_before + raw_stream.tell())


def replay_files(
    paths: list[Path],
    source: Source | list[Source],
    emit: Callable[[Touchpoint], None],
    reject: Callable[[Rejected], None],
    rate: float | None = None,
    follow: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReplayStats:
    """Map every record of *paths* with *source*; ``emit`` touchpoints, ``reject`` the rest.

    With one source the files are read one after the other. With a list of sources (one
    per path, e.g. the generated sample's files) the files are read side by side and
    merged in event time, so that the pipeline sees the channels interleaved as they
    happened, not one month of e-mail after one month of web traffic (which its
    watermark would call late). Each file should be in time order; ``follow`` is for
    one source only. ``on_progress(bytes_done, records)`` is called every few thousand
    records.
    """
    stats = ReplayStats()
    throttle = Throttle(rate)
    sources = source if isinstance(source, list) else [source] * len(paths)
    if len(sources) != len(paths):
        raise ConnectorError("replay: one source per file is needed")

    def keep_following() -> bool:
        if should_stop():
            return False
        time.sleep(0.25)
        return True

    def one_by_one() -> Iterator[_Step]:
        done = 0
        for index, (path, src) in enumerate(zip(paths, sources, strict=True)):
            stats.files += 1
            last = index == len(paths) - 1
            yield from _steps(path, src, keep_following if follow and last else None, done)
            done += path.stat().st_size

    def merged() -> Iterator[_Step]:
        stats.files += len(paths)
        offsets = [0] * len(paths)
        streams = [
            ((step.at, i, step) for step in _steps(path, src, None, 0))
            for i, (path, src) in enumerate(zip(paths, sources, strict=True))
        ]
        for _at, i, step in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            offsets[i] = step.done_bytes
            step.done_bytes = sum(offsets)
            yield step

    mixed = isinstance(source, list) and len({s.name for s in sources}) > 1
    if mixed and follow:
        raise ConnectorError("replay: --follow reads one source")
    for step in merged() if mixed else one_by_one():
        stats.records += 1
        if step.rejected is not None:
            stats.note(step.rejected)
            reject(step.rejected)
        for tp in step.touchpoints:
            emit(tp)
        stats.touchpoints += len(step.touchpoints)
        throttle.tick(max(1, len(step.touchpoints)))
        if on_progress is not None and stats.records % 2000 == 0:
            on_progress(step.done_bytes, stats.records)
        if should_stop():
            return stats
    if on_progress is not None:
        on_progress(sum(p.stat().st_size for p in paths), stats.records)
    return stats


def source_of_file(path: Path, names: Iterable[str]) -> str:
    """The source a file's name starts with (``pos.csv``, ``sendgrid-2026-10.jsonl.gz``)."""
    stem = path.name.lower()
    for name in sorted(names, key=len, reverse=True):
        if stem.startswith(name) and (len(stem) == len(name) or not stem[len(name)].isalpha()):
            return name
    raise ConnectorError(
        f"{path}: --source auto names the source by the file name, which starts with none "
        f"of: {', '.join(sorted(names))}"
    )
