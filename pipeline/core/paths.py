"""Aggregated customer paths: the ChannelAttribution path-file layout, parsed and built.

A *path file* is a CSV with the header ``path,total_conversions,total_conversion_value,
total_null`` (ChannelAttribution uses the same layout). Each row is one distinct path,
its channels joined by ``" > "``; the counts say how many journeys took that path and
converted (``total_conversions``, worth ``total_conversion_value`` in all) or did not
(``total_null``)::

    path,total_conversions,total_conversion_value,total_null
    email > paid_search > direct,3,120.0,10
    social,0,0,4

Parsing is tolerant of layout noise: spaces around ``>`` are stripped, a header split
by ``;`` or tabs instead of commas selects that delimiter, a UTF-8 byte-order
mark is ignored, extra columns are ignored, the two optional columns
``total_conversion_value`` and ``total_null`` default to 0 when absent, and ``.gz`` files
are read transparently. Anything else that is wrong is a :class:`PathFileError` whose
message starts with ``FILE:LINE:``.

:class:`PathStats` holds the rows encoded for vectorised models: a channel vocabulary, the
channel codes of every path concatenated into one integer array, row offsets, and one
float array per count column. It is the input of the data-driven models and of the batch
attribution in :mod:`pipeline.core.attribution`.

Everything here is pure: no environment, no network, only the file it is asked to read.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

#: Separator written between channels; parsing splits on ``>`` and strips spaces.
PATH_SEPARATOR = " > "

#: Columns of a path file, in the order :func:`write_path_file` writes them.
PATH_COLUMNS: tuple[str, ...] = (
    "path",
    "total_conversions",
    "total_conversion_value",
    "total_null",
)
_REQUIRED_COLUMNS = ("path", "total_conversions")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class PathFileError(ValueError):
    """A path file (or one of its rows) cannot be read.

    ``str(error)`` is ``FILE:LINE: message`` (or ``FILE: message`` when no single line
    is at fault), so that a CLI can print it as is.
    """

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class PathRow:
    """One distinct path with its counts, the unit of a path file."""

    channels: tuple[str, ...]
    conversions: float = 0.0
    value: float = 0.0
    nulls: float = 0.0

    @property
    def path(self) -> str:
        return PATH_SEPARATOR.join(self.channels)


@dataclass(frozen=True, eq=False)
class PathStats:
    """Aggregated paths, encoded for vectorised attribution.

    * ``channels``: the vocabulary; channel code ``i`` is ``channels[i]`` (first-seen order).
    * ``codes``: the channel codes of every path, concatenated (int64).
    * ``offsets``: ``len(conversions) + 1`` row boundaries: path ``r`` is
      ``codes[offsets[r]:offsets[r + 1]]``. Every path has at least one channel.
    * ``conversions``, ``value``, ``nulls``: one float per path.
    """

    channels: tuple[str, ...]
    codes: IntArray
    offsets: IntArray
    conversions: FloatArray
    value: FloatArray
    nulls: FloatArray

    def __post_init__(self) -> None:
        n = self.conversions.shape[0]
        if self.offsets.shape[0] != n + 1 or self.value.shape[0] != n or self.nulls.shape[0] != n:
            raise ValueError("PathStats: arrays of different lengths")
        if n and (self.offsets[0] != 0 or self.offsets[-1] != self.codes.shape[0]):
            raise ValueError("PathStats: offsets do not cover codes")
        if n and np.any(np.diff(self.offsets) < 1):
            raise ValueError("PathStats: every path needs at least one channel")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Iterable[PathRow]) -> PathStats:
        """Encode rows (in order; duplicates are kept as separate rows)."""
        builder = _Builder()
        for row in rows:
            if not row.channels:
                raise ValueError("PathStats: a path needs at least one channel")
            builder.add(row.channels, row.conversions, row.value, row.nulls)
        return builder.build()

    @classmethod
    def empty(cls) -> PathStats:
        return _Builder().build()

    # -- views -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.conversions.shape[0])

    @property
    def lengths(self) -> IntArray:
        """Number of touches of every path."""
        return np.diff(self.offsets)

    @property
    def total_conversions(self) -> float:
        return float(self.conversions.sum())

    @property
    def total_value(self) -> float:
        return float(self.value.sum())

    @property
    def total_nulls(self) -> float:
        return float(self.nulls.sum())

    def path(self, index: int) -> tuple[str, ...]:
        """The channels of path *index*."""
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return tuple(self.channels[c] for c in self.codes[start:stop])

    def rows(self) -> Iterator[PathRow]:
        """The rows back, decoded."""
        for i in range(len(self)):
            yield PathRow(
                self.path(i),
                float(self.conversions[i]),
                float(self.value[i]),
                float(self.nulls[i]),
            )

    def row_ids(self) -> IntArray:
        """For every element of ``codes``, the index of its path."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def merged(self) -> PathStats:
        """The same data with identical paths summed into one row (first-seen order)."""
        totals: dict[tuple[int, ...], list[float]] = {}
        for i in range(len(self)):
            key = tuple(self.codes[self.offsets[i] : self.offsets[i + 1]].tolist())
            acc = totals.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += float(self.conversions[i])
            acc[1] += float(self.value[i])
            acc[2] += float(self.nulls[i])
        return PathStats.from_rows(
            PathRow(tuple(self.channels[c] for c in key), *acc) for key, acc in totals.items()
        )


class _Builder:
    """Accumulates rows into the flat arrays of a :class:`PathStats`."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.codes: list[int] = []
        self.offsets: list[int] = [0]
        self.conversions: list[float] = []
        self.value: list[float] = []
        self.nulls: list[float] = []

    def add(self, channels: Iterable[str], conversions: float, value: float, nulls: float) -> None:
        vocab = self.vocab
        codes = self.codes
        for channel in channels:
            code = vocab.get(channel)
            if code is None:
                code = vocab[channel] = len(vocab)
            codes.append(code)
        self.offsets.append(len(codes))
        self.conversions.append(conversions)
        self.value.append(value)
        self.nulls.append(nulls)

    def build(self) -> PathStats:
        return PathStats(
            channels=tuple(self.vocab),
            codes=np.asarray(self.codes, dtype=np.int64),
            offsets=np.asarray(self.offsets, dtype=np.int64),
            conversions=np.asarray(self.conversions, dtype=np.float64),
            value=np.asarray(self.value, dtype=np.float64),
            nulls=np.asarray(self.nulls, dtype=np.float64),
        )


# -- parsing ---------------------------------------------------------------------------


def split_path(text: str) -> list[str]:
    """``"a > b >c"`` -> ``["a", "b", "c"]``; raises ValueError on an empty channel."""
    channels = [part.strip() for part in text.split(">")]
    if not all(channels):
        raise ValueError(_empty_channel(text))
    return channels


def _empty_channel(text: str) -> str:
    if not text.strip():
        return "empty path"
    return f"empty channel name in path {text!r}"


def _new_codes(
    tokens: list[str],
    raw_codes: dict[str, int],
    vocab: dict[str, int],
    *,
    source: str,
    line: int,
    text: str,
) -> list[int]:
    """Codes of a path with a token spelling not seen before (slow path of parsing)."""
    out = []
    for token in tokens:
        code = raw_codes.get(token)
        if code is None:
            channel = token.strip()
            if not channel:
                raise PathFileError(source, line, _empty_channel(text))
            code = vocab.get(channel)
            if code is None:
                code = vocab[channel] = len(vocab)
            raw_codes[token] = code
        out.append(code)
    return out


def _number(raw: str, column: str) -> float:
    try:
        number = float(raw)
    except ValueError as exc:
        if not raw.strip():
            return 0.0
        raise ValueError(f"{column}: {raw.strip()!r} is not a number") from exc
    if not 0.0 <= number < math.inf:  # also refuses NaN
        raise ValueError(f"{column}: {raw.strip()!r} must be a finite number >= 0")
    return number


def _delimiter(header: str) -> str:
    """``,`` normally; ``;`` or tab when the header is only split by that (as
    ChannelAttribution's own sample ``Data.csv`` is, with ``;``)."""
    if "," not in header:
        for candidate in (";", "\t"):
            if candidate in header:
                return candidate
    return ","


def parse_path_csv(stream: TextIO, source: str = "<paths>") -> PathStats:
    """Parse a path CSV from an open text stream; *source* names it in errors."""
    first_line = stream.readline()
    if not first_line.strip():
        raise PathFileError(source, None, "empty file: expected a header " + ",".join(PATH_COLUMNS))
    reader = csv.reader(itertools.chain([first_line], stream), delimiter=_delimiter(first_line))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise PathFileError(source, 1, f"malformed CSV: {exc}") from exc
    if header is None:  # pragma: no cover - the first line was not blank
        raise PathFileError(source, 1, "no header")
    names = [h.strip().lstrip("\ufeff").strip() for h in header]
    missing = [c for c in _REQUIRED_COLUMNS if c not in names]
    if missing:
        raise PathFileError(
            source,
            1,
            f"missing column(s) {', '.join(missing)}: expected a header "
            f"{','.join(PATH_COLUMNS)} (got {','.join(names)})",
        )
    i_path = names.index("path")
    i_conv = names.index("total_conversions")
    i_value = names.index("total_conversion_value") if "total_conversion_value" in names else -1
    i_null = names.index("total_null") if "total_null" in names else -1
    width = max(i_path, i_conv, i_value, i_null) + 1

    builder = _Builder()
    vocab = builder.vocab
    codes = builder.codes
    offsets = builder.offsets
    conversions = builder.conversions
    values = builder.value
    nulls = builder.nulls
    # Raw token (spaces included) -> code: most tokens repeat, so strip each spelling once.
    raw_codes: dict[str, int] = {}
    lines: list[int] = []
    line = 1
    try:
        for record in reader:
            line = reader.line_num
            if len(record) < width:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                raise PathFileError(
                    source, line, f"expected {len(names)} columns, got {len(record)}"
                )
            tokens = record[i_path].split(">")
            try:
                codes.extend([raw_codes[token] for token in tokens])
            except KeyError:
                codes.extend(
                    _new_codes(
                        tokens, raw_codes, vocab, source=source, line=line, text=record[i_path]
                    )
                )
            try:
                conversion = float(record[i_conv])
                value = float(record[i_value]) if i_value >= 0 else 0.0
                null = float(record[i_null]) if i_null >= 0 else 0.0
            except ValueError:
                try:
                    conversion = _number(record[i_conv], "total_conversions")
                    value = (
                        _number(record[i_value], "total_conversion_value") if i_value >= 0 else 0.0
                    )
                    null = _number(record[i_null], "total_null") if i_null >= 0 else 0.0
                except ValueError as exc:
                    raise PathFileError(source, line, str(exc)) from exc
            conversions.append(conversion)
            values.append(value)
            nulls.append(null)
            lines.append(line)
            offsets.append(len(codes))
    except csv.Error as exc:
        raise PathFileError(source, reader.line_num, f"malformed CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PathFileError(source, line + 1, f"not UTF-8 text: {exc.reason}") from exc
    stats = builder.build()
    for column, array in (
        ("total_conversions", stats.conversions),
        ("total_conversion_value", stats.value),
        ("total_null", stats.nulls),
    ):
        bad = np.nonzero(~((array >= 0) & np.isfinite(array)))[0]
        if bad.size:
            first = int(bad[0])
            raise PathFileError(
                source, lines[first], f"{column}: {array[first]} must be a finite number >= 0"
            )
    return stats


def read_path_file(path: str | Path) -> PathStats:
    """Read a path file (``.csv`` or ``.csv.gz``) into :class:`PathStats`."""
    source = str(path)
    try:
        if source.endswith(".gz"):
            with gzip.open(source, "rt", encoding="utf-8-sig", newline="") as fh:
                return parse_path_csv(fh, source)
        with open(source, encoding="utf-8-sig", newline="") as fh:
            return parse_path_csv(fh, source)
    except OSError as exc:
        raise PathFileError(source, None, f"cannot read: {exc.strerror or exc}") from exc
    except EOFError as exc:
        raise PathFileError(source, None, f"truncated gzip file: {exc}") from exc


def parse_path_text(text: str, source: str = "<paths>") -> PathStats:
    """Parse path-file content given as a string (handy in tests and docs)."""
    return parse_path_csv(io.StringIO(text.lstrip("\ufeff")), source)


# -- building rows from journeys ------------------------------------------------------


def aggregate_journeys(
    journeys: Iterable[tuple[Sequence[str], bool, float]],
) -> list[PathRow]:
    """Aggregate journeys ``(channels, converted, value)`` into path-file rows.

    Identical channel sequences become one row; a converted journey adds 1 to
    ``conversions`` and its *value* to ``value``, any other adds 1 to ``nulls``. Channel
    names are stripped; journeys without any channel are skipped (they have no path).
    Rows come out in first-seen order.
    """
    totals: dict[tuple[str, ...], list[float]] = {}
    for channels, converted, value in journeys:
        key = tuple(c.strip() for c in channels)
        if not key:
            continue
        if any(not c or ">" in c for c in key):
            raise ValueError(f"channel names must be non-empty and free of '>': {key!r}")
        acc = totals.setdefault(key, [0.0, 0.0, 0.0])
        if converted:
            acc[0] += 1.0
            acc[1] += float(value)
        else:
            acc[2] += 1.0
    return [PathRow(key, acc[0], acc[1], acc[2]) for key, acc in totals.items()]


def write_path_file(rows: Iterable[PathRow], stream: TextIO) -> None:
    """Write rows in the path-file layout (header included)."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(PATH_COLUMNS)
    for row in rows:
        writer.writerow(
            (row.path, _fmt(row.conversions), _fmt(row.value), _fmt(row.nulls)),
        )


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))
