"""``journeys replay``: publish log files of a source to Kafka.

Files are JSON Lines or CSV, optionally gzip-compressed (by their name: ``.jsonl``,
``.ndjson``, ``.json``, ``.csv``, each with an optional ``.gz``). Every line becomes
touchpoints or a dead letter whose location is ``file:line``; nothing is dropped.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from connectors.base import ConnectorError, Rejected, Source, map_record
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
            yield location, raw, json.loads(raw.decode("utf-8")), None
        except UnicodeDecodeError:
            yield location, raw, None, "not valid UTF-8"
        except json.JSONDecodeError as exc:
            yield location, raw, None, f"invalid JSON at column {exc.colno}: {exc.msg}"
        except RecursionError:
            yield location, raw[:4096], None, "JSON nested too deeply"


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


def replay_files(
    paths: list[Path],
    source: Source,
    emit: Callable[[Touchpoint], None],
    reject: Callable[[Rejected], None],
    rate: float | None = None,
    follow: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReplayStats:
    """Map every record of *paths* with *source*; ``emit`` touchpoints, ``reject`` the rest.

    ``on_progress(bytes_done, records)`` is called every few thousand records.
    """
    stats = ReplayStats()
    throttle = Throttle(rate)
    done_bytes = 0
    for index, path in enumerate(paths):
        fmt = file_format(path)
        if fmt not in source.formats:
            raise ConnectorError(
                f"{path}: source {source.name!r} reads {', '.join(source.formats)}, not {fmt}"
            )
        stats.files += 1
        last = index == len(paths) - 1

        def keep_following() -> bool:
            if should_stop():
                return False
            time.sleep(0.25)
            return True

        with _open(path) as stream:
            items = (
                iter_jsonl(path, stream, keep_following if follow and last else None)
                if fmt == "jsonl"
                else iter_csv(path, stream)
            )
            for location, raw, record, error in items:
                stats.records += 1
                received = datetime.now(UTC)
                if error is not None:
                    rejected: Rejected | None = Rejected(source.name, error, raw, location)
                    touchpoints: list[Touchpoint] = []
                else:
                    mapped = map_record(source, record, raw, received, location)
                    rejected, touchpoints = mapped.rejected, mapped.touchpoints
                if rejected is not None:
                    stats.note(rejected)
                    reject(rejected)
                for tp in touchpoints:
                    emit(tp)
                stats.touchpoints += len(touchpoints)
                throttle.tick(max(1, len(touchpoints)))
                if on_progress is not None and stats.records % 2000 == 0:
                    raw_stream: Any = getattr(stream, "fileobj", stream)
                    on_progress(done_bytes + raw_stream.tell(), stats.records)
                if should_stop():
                    return stats
        done_bytes += path.stat().st_size
        if on_progress is not None:
            on_progress(done_bytes, stats.records)
    return stats
