"""Multi-touch attribution: six rule-based models and two data-driven ones.

Pure code over plain values (and numpy): no Faust, Kafka, ClickHouse or environment.
``docs/attribution.md`` explains every model with worked examples; this docstring is the
short version.

Two ways in
===========

* **Per conversion** (the stream): :func:`attribute_conversion` takes the touches of one
  conversion (:class:`Touch`, or any :class:`TouchLike` such as the journey builder's
  touches: channel, tz-aware time, campaign and event id), the conversion time and its
  revenue, and returns one :class:`TouchCredit` per touch, aligned with the input list.
  Credits sum to 1 and revenue credits sum to the revenue (both within 1e-9; the
  rounding residue goes to the largest share).
* **Per path file** (batch, ``journeys attribute``): :func:`attribute_paths` runs the
  models over aggregated paths (:class:`~pipeline.core.paths.PathStats`) and returns, per
  model, every channel's attributed conversions and value (:class:`ChannelTotals`). The
  rule-based models are vectorised over the rows; a row with ``total_conversions = n``
  gives ``n x`` the credit of one conversion on that path.

Models (names are part of the contract, see :data:`MODELS`)
===========================================================

``first_touch``
    All credit to the earliest touch.
``last_touch``
    All credit to the latest touch.
``last_non_direct``
    All credit to the latest touch whose channel is not ``"direct"``; a journey made
    only of direct touches credits its last (direct) touch.
``linear``
    Equal credit per touch; a channel touched twice gets two shares.
``time_decay``
    Touch weight ``0.5 ** (hours_before_conversion / half_life_hours)``, normalised per
    journey. Half-life 7 days (168 h) by default. A touch at or after the conversion
    counts as 0 hours before it. Path files carry no times, so the batch version places
    the touches ``touch_interval_hours`` apart (24 h by default), the last one at the
    conversion.
``position_based``
    First / middle / last weights, 40/20/40 by default (any three non-negative numbers,
    normalised). One touch gets everything. Two touches share the first and last weights
    renormalised (40/40 -> 50/50; 30/40/30 -> 50/50; 60/20/20 -> 75/25; if both are 0,
    50/50). From three touches on, the middle weight is split evenly among the middle
    touches.
``markov``
    Removal effects of an absorbing Markov chain fitted on converting *and* null paths
    (see :func:`fit_markov`), computed exactly from the fundamental matrix of the
    chain (no simulation).
``shapley``
    Shapley values over channel sets with the observed conversion rate of each exact set
    as the characteristic function (see :func:`fit_shapley`).

The data-driven models learn a snapshot (:class:`ChannelWeights` for Markov,
:class:`ShapleyWeights` for Shapley) from aggregated paths. A conversion's credit is then
the snapshot's weights of the *distinct* channels of its own path, normalised over those
channels, each channel's share split evenly among its touches. If every channel of the
path has weight 0 (or is unknown to the snapshot), or no snapshot is given yet, the
conversion is credited like ``linear``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.core.paths import PathRow, PathStats

__all__ = [
    "DATA_DRIVEN_MODELS",
    "DEFAULT_CONFIG",
    "MODELS",
    "RULE_BASED_MODELS",
    "SHAPLEY_NEGATIVES",
    "AttributionConfig",
    "AttributionError",
    "ChannelTotals",
    "ChannelWeights",
    "ModelSnapshot",
    "PathRow",
    "PathStats",
    "ShapleyWeights",
    "Touch",
    "TouchCredit",
    "TouchLike",
    "apply_snapshot",
    "attribute_conversion",
    "attribute_paths",
    "first_touch",
    "fit_markov",
    "fit_shapley",
    "fit_snapshot",
    "heuristic_totals",
    "last_non_direct",
    "last_touch",
    "linear",
    "markov_totals",
    "position_based",
    "shapley_totals",
    "shapley_values",
    "snapshot_from_record",
    "time_decay",
]

#: Every model, in the order reports show them (contract names).
MODELS: tuple[str, ...] = (
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "time_decay",
    "position_based",
    "markov",
    "shapley",
)
#: Models computed from the touches of one conversion alone.
RULE_BASED_MODELS: tuple[str, ...] = MODELS[:6]
#: Models that learn a snapshot from aggregated converting and null paths.
DATA_DRIVEN_MODELS: tuple[str, ...] = ("markov", "shapley")

DIRECT_CHANNEL = "direct"
DEFAULT_HALF_LIFE_HOURS = 168.0
DEFAULT_POSITION_WEIGHTS: tuple[float, float, float] = (40.0, 20.0, 40.0)
DEFAULT_TOUCH_INTERVAL_HOURS = 24.0
#: Above this many transient states a Markov chain is solved iteratively, not densely.
MARKOV_DENSE_STATE_LIMIT = 1000
#: What ``attribute --paths`` may do with negative Shapley values: clip them to 0 (the
#: default, as the stream does) or keep them (DP6 ``marketing-attribution-models``).
SHAPLEY_NEGATIVES: tuple[str, ...] = ("clip", "keep")
#: Channel sets larger than this make :func:`fit_shapley` warn (2^n subsets each).
SHAPLEY_WARN_SET_SIZE = 20

_MAX_BITMASK_CHANNELS = 62
_SUBSET_BLOCK = 1 << 22  # elements per vectorised Shapley block (~32 MiB of float64)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _weighted_bincount(index: IntArray, weights: FloatArray, minlength: int = 0) -> FloatArray:
    """``numpy.bincount`` with weights, typed as the float array it returns."""
    return np.asarray(np.bincount(index, weights=weights, minlength=minlength), dtype=np.float64)


class AttributionError(Exception):
    """Attribution cannot be computed from these inputs (bad touches, config or data)."""


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touch:
    """One touch of a journey: a channel at a (timezone-aware) time."""

    channel: str
    at: datetime
    campaign: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        if not self.channel:
            raise AttributionError("touch channel must not be empty")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise AttributionError(
                f"touch {self.event_id or self.channel}: naive datetime "
                f"{self.at.isoformat()}; a timezone is required"
            )


class TouchLike(Protocol):
    """Anything with a touch's four attributes, e.g. ``pipeline.core.journeys.Touch``."""

    @property
    def channel(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def campaign(self) -> str | None: ...

    @property
    def event_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class TouchCredit:
    """The credit of one touch for one conversion under one model.

    ``position`` is the touch's 0-based rank in time order (ties keep input order).
    """

    position: int
    channel: str
    campaign: str | None
    event_id: str | None
    credit: float
    revenue_credit: float


def _position_shares(weights: Sequence[float]) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise AttributionError(f"position weights need 3 numbers (first, middle, last): {weights}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise AttributionError(f"position weights must be finite and >= 0: {tuple(weights)}")
    total = math.fsum(weights)
    if total <= 0:
        raise AttributionError(f"position weights must not all be 0: {tuple(weights)}")
    first, middle, last = (float(w) / total for w in weights)
    return first, middle, last


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """Tunables of the models. Defaults: 7-day half-life, 40/20/40, first-order Markov."""

    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS
    position_weights: tuple[float, float, float] = DEFAULT_POSITION_WEIGHTS
    markov_order: int = 1
    direct_channel: str = DIRECT_CHANNEL
    #: Spacing assumed between the touches of a path-file row (they carry no times).
    touch_interval_hours: float = DEFAULT_TOUCH_INTERVAL_HOURS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life_hours) and self.half_life_hours > 0):
            raise AttributionError(f"half_life_hours must be > 0, got {self.half_life_hours}")
        if not (math.isfinite(self.touch_interval_hours) and self.touch_interval_hours >= 0):
            raise AttributionError(
                f"touch_interval_hours must be >= 0, got {self.touch_interval_hours}"
            )
        _position_shares(self.position_weights)
        if isinstance(self.markov_order, bool) or not isinstance(self.markov_order, int):
            raise AttributionError(f"markov_order must be an integer, got {self.markov_order!r}")
        if self.markov_order < 1:
            raise AttributionError(f"markov_order must be >= 1, got {self.markov_order}")


DEFAULT_CONFIG = AttributionConfig()


# -- per-conversion rule-based models --------------------------------------------------


def _check_conversion(
    touches: Sequence[TouchLike], converted_at: datetime, revenue: float
) -> list[int]:
    """Validate and return the touch indices in time order (stable)."""
    if not touches:
        raise AttributionError("a conversion needs at least one touch to attribute")
    for t in touches:
        if not t.channel:
            raise AttributionError(f"touch {t.event_id}: channel must not be empty")
        if t.at.tzinfo is None or t.at.utcoffset() is None:
            raise AttributionError(
                f"touch {t.event_id or t.channel}: naive datetime {t.at.isoformat()}; "
                "a timezone is required"
            )
    if converted_at.tzinfo is None or converted_at.utcoffset() is None:
        raise AttributionError(
            f"naive conversion time {converted_at.isoformat()}; a timezone is required"
        )
    if not math.isfinite(revenue):
        raise AttributionError(f"revenue must be a finite number, got {revenue}")
    return sorted(range(len(touches)), key=lambda i: (touches[i].at, i))


def _normalised(weights: Sequence[float], total: float) -> list[float]:
    """Scale *weights* to sum to *total* exactly (the residue goes to the largest)."""
    mass = math.fsum(weights)
    scaled = [w / mass * total for w in weights]
    residue = total - math.fsum(scaled)
    if residue:
        biggest = max(range(len(scaled)), key=lambda i: abs(scaled[i]))
        scaled[biggest] += residue
    return scaled


def _credits(
    touches: Sequence[TouchLike], order: Sequence[int], weights: Sequence[float], revenue: float
) -> list[TouchCredit]:
    """Touch credits from non-negative *weights* (aligned with *touches*, positive sum)."""
    credit = _normalised(weights, 1.0)
    revenue_credit = [0.0] * len(credit) if revenue == 0 else _normalised(credit, revenue)
    rank = [0] * len(order)
    for position, index in enumerate(order):
        rank[index] = position
    return [
        TouchCredit(
            position=rank[i],
            channel=t.channel,
            campaign=t.campaign,
            event_id=t.event_id,
            credit=credit[i],
            revenue_credit=revenue_credit[i],
        )
        for i, t in enumerate(touches)
    ]


def _one_hot(size: int, index: int) -> list[float]:
    weights = [0.0] * size
    weights[index] = 1.0
    return weights


def first_touch(
    touches: Sequence[TouchLike], converted_at: datetime, revenue: float = 0.0
) -> list[TouchCredit]:
    """All the credit to the earliest touch (the first in input order on a tie)."""
    order = _check_conversion(touches, converted_at, revenue)
    return _credits(touches, order, _one_hot(len(touches), order[0]), revenue)


def last_touch(
    touches: Sequence[TouchLike], converted_at: datetime, revenue: float = 0.0
) -> list[TouchCredit]:
    """All the credit to the latest touch (the last in input order on a tie)."""
    order = _check_conversion(touches, converted_at, revenue)
    return _credits(touches, order, _one_hot(len(touches), order[-1]), revenue)


def last_non_direct(
    touches: Sequence[TouchLike],
    converted_at: datetime,
    revenue: float = 0.0,
    *,
    direct_channel: str = DIRECT_CHANNEL,
) -> list[TouchCredit]:
    """All the credit to the latest touch whose channel is not *direct_channel*.

    A journey of direct touches only credits its latest (direct) touch.
    """
    order = _check_conversion(touches, converted_at, revenue)
    chosen = next((i for i in reversed(order) if touches[i].channel != direct_channel), order[-1])
    return _credits(touches, order, _one_hot(len(touches), chosen), revenue)


def linear(
    touches: Sequence[TouchLike], converted_at: datetime, revenue: float = 0.0
) -> list[TouchCredit]:
    """Equal credit per touch: ``1 / len(touches)`` each, so repeats of a channel add up."""
    order = _check_conversion(touches, converted_at, revenue)
    return _credits(touches, order, [1.0] * len(touches), revenue)


def time_decay(
    touches: Sequence[TouchLike],
    converted_at: datetime,
    revenue: float = 0.0,
    *,
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS,
) -> list[TouchCredit]:
    """Weight ``0.5 ** (hours before conversion / half_life_hours)``, normalised.

    A touch at or after the conversion counts as 0 hours before it. Weights are computed
    relative to the latest touch, so a tiny half-life never underflows to all zeros.
    """
    order = _check_conversion(touches, converted_at, revenue)
    if not (math.isfinite(half_life_hours) and half_life_hours > 0):
        raise AttributionError(f"half_life_hours must be > 0, got {half_life_hours}")
    hours = [max(0.0, (converted_at - t.at).total_seconds() / 3600.0) for t in touches]
    nearest = min(hours)
    weights = [0.5 ** ((h - nearest) / half_life_hours) for h in hours]
    return _credits(touches, order, weights, revenue)


def position_based(
    touches: Sequence[TouchLike],
    converted_at: datetime,
    revenue: float = 0.0,
    *,
    weights: Sequence[float] = DEFAULT_POSITION_WEIGHTS,
) -> list[TouchCredit]:
    """First/middle/last weights (40/20/40 by default; normalised to sum 1).

    One touch takes everything; two touches share the first and last weights
    renormalised (50/50 when both are 0); from three touches on the middle weight is split
    evenly among the middle touches.
    """
    order = _check_conversion(touches, converted_at, revenue)
    first, middle, last = _position_shares(weights)
    n = len(touches)
    raw = [0.0] * n
    if n == 1:
        raw[order[0]] = 1.0
    elif n == 2:
        ends = first + last
        raw[order[0]] = first / ends if ends > 0 else 0.5
        raw[order[1]] = last / ends if ends > 0 else 0.5
    else:
        for index in order[1:-1]:
            raw[index] = middle / (n - 2)
        raw[order[0]] = first
        raw[order[-1]] = last
    return _credits(touches, order, raw, revenue)


# -- data-driven models: snapshots -----------------------------------------------------


class ModelSnapshot(Protocol):
    """What a data-driven model learned: weights for the channels of any path."""

    @property
    def model(self) -> str: ...

    def channel_weights(self, channels: Collection[str]) -> dict[str, float]:
        """Non-negative weights of these distinct channels (not necessarily normalised)."""
        ...

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict; :func:`snapshot_from_record` reads it back."""
        ...


@dataclass(frozen=True)
class ChannelWeights:
    """A Markov snapshot: one weight per channel, the normalised removal effects.

    ``weights[c] = removal_effects[c] / sum(removal_effects)`` (all 0 when nothing
    converts). ``conversion_probability`` is ``P``, the chance that a journey starting at
    ``(start)`` reaches ``(conversion)``.
    """

    weights: Mapping[str, float]
    removal_effects: Mapping[str, float]
    conversion_probability: float
    order: int = 1
    total_conversions: float = 0.0
    total_value: float = 0.0
    model: str = "markov"

    def channel_weights(self, channels: Collection[str]) -> dict[str, float]:
        return {c: float(self.weights.get(c, 0.0)) for c in channels}

    def to_record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "order": self.order,
            "conversion_probability": self.conversion_probability,
            "total_conversions": self.total_conversions,
            "total_value": self.total_value,
            "weights": dict(self.weights),
            "removal_effects": dict(self.removal_effects),
        }


@dataclass(frozen=True)
class ShapleyWeights:
    """A Shapley snapshot: normalised Shapley shares for every converting channel set.

    ``set_values[S]`` is ``v(S)``, the conversion rate of journeys whose channel set is
    exactly ``S`` (every observed set, converting or not). ``set_shares[N]`` is the
    clipped, normalised Shapley value of each channel of a converting set ``N``;
    ``set_conversions[N]`` and ``set_revenue[N]`` are its conversions and value.
    ``weights`` is each channel's share of all attributed conversions.

    For a set never seen converting, :meth:`channel_weights` computes the Shapley values
    on the fly from ``set_values`` (unobserved subsets are worth 0) and caches them.
    """

    set_values: Mapping[frozenset[str], float]
    set_shares: Mapping[frozenset[str], Mapping[str, float]]
    set_conversions: Mapping[frozenset[str], float]
    set_revenue: Mapping[frozenset[str], float]
    weights: Mapping[str, float]
    total_conversions: float = 0.0
    total_value: float = 0.0
    model: str = "shapley"
    _cache: dict[frozenset[str], dict[str, float]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def channel_weights(self, channels: Collection[str]) -> dict[str, float]:
        key = frozenset(channels)
        known = self.set_shares.get(key)
        if known is None:
            known = self._cache.get(key)
        if known is None:
            values = self.set_values
            phi = shapley_values(sorted(key), lambda s: float(values.get(s, 0.0)))
            known = _clip_normalise(phi)
            self._cache[key] = known
        return {c: float(known.get(c, 0.0)) for c in channels}

    def to_record(self) -> dict[str, Any]:
        sets = []
        for key, v in self.set_values.items():
            entry: dict[str, Any] = {"channels": sorted(key), "v": v}
            if key in self.set_shares:
                entry["shares"] = dict(self.set_shares[key])
                entry["conversions"] = self.set_conversions.get(key, 0.0)
                entry["value"] = self.set_revenue.get(key, 0.0)
            sets.append(entry)
        return {
            "model": self.model,
            "total_conversions": self.total_conversions,
            "total_value": self.total_value,
            "weights": dict(self.weights),
            "sets": sets,
        }


def snapshot_from_record(record: Mapping[str, Any]) -> ChannelWeights | ShapleyWeights:
    """Rebuild a snapshot from :meth:`ModelSnapshot.to_record` output."""
    try:
        model = record["model"]
        if model == "markov":
            return ChannelWeights(
                weights={str(k): float(v) for k, v in record["weights"].items()},
                removal_effects={str(k): float(v) for k, v in record["removal_effects"].items()},
                conversion_probability=float(record["conversion_probability"]),
                order=int(record.get("order", 1)),
                total_conversions=float(record.get("total_conversions", 0.0)),
                total_value=float(record.get("total_value", 0.0)),
            )
        if model == "shapley":
            values: dict[frozenset[str], float] = {}
            shares: dict[frozenset[str], Mapping[str, float]] = {}
            conversions: dict[frozenset[str], float] = {}
            revenue: dict[frozenset[str], float] = {}
            for entry in record["sets"]:
                key = frozenset(str(c) for c in entry["channels"])
                values[key] = float(entry["v"])
                if "shares" in entry:
                    shares[key] = {str(k): float(v) for k, v in entry["shares"].items()}
                    conversions[key] = float(entry.get("conversions", 0.0))
                    revenue[key] = float(entry.get("value", 0.0))
            return ShapleyWeights(
                set_values=values,
                set_shares=shares,
                set_conversions=conversions,
                set_revenue=revenue,
                weights={str(k): float(v) for k, v in record.get("weights", {}).items()},
                total_conversions=float(record.get("total_conversions", 0.0)),
                total_value=float(record.get("total_value", 0.0)),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AttributionError(f"malformed model snapshot record: {exc!r}") from exc
    raise AttributionError(f"unknown snapshot model {model!r}: expected markov or shapley")


def apply_snapshot(
    snapshot: ModelSnapshot | None,
    touches: Sequence[TouchLike],
    converted_at: datetime,
    revenue: float = 0.0,
) -> list[TouchCredit]:
    """Credit one conversion with a data-driven snapshot.

    The snapshot's weights of the path's *distinct* channels are normalised over those
    channels; each channel's share is split evenly among its touches. If the weights are
    all 0 (or the channels unknown), or *snapshot* is None, the credit is ``linear``.
    """
    order = _check_conversion(touches, converted_at, revenue)
    if snapshot is None:
        return _credits(touches, order, [1.0] * len(touches), revenue)
    counts: dict[str, int] = {}
    for t in touches:
        counts[t.channel] = counts.get(t.channel, 0) + 1
    weights = snapshot.channel_weights(list(counts))
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise AttributionError(f"{snapshot.model} snapshot gave invalid weights {weights}")
    if math.fsum(weights.get(c, 0.0) for c in counts) <= 0:
        return _credits(touches, order, [1.0] * len(touches), revenue)
    per_touch = [weights.get(t.channel, 0.0) / counts[t.channel] for t in touches]
    return _credits(touches, order, per_touch, revenue)


def attribute_conversion(
    model: str,
    touches: Sequence[TouchLike],
    converted_at: datetime,
    revenue: float = 0.0,
    *,
    config: AttributionConfig = DEFAULT_CONFIG,
    snapshot: ModelSnapshot | None = None,
) -> list[TouchCredit]:
    """Credit one conversion under *model* (one of :data:`MODELS`).

    ``markov`` and ``shapley`` use *snapshot* (which must be of that model); without one
    they fall back to ``linear``.
    """
    if model == "first_touch":
        return first_touch(touches, converted_at, revenue)
    if model == "last_touch":
        return last_touch(touches, converted_at, revenue)
    if model == "last_non_direct":
        return last_non_direct(touches, converted_at, revenue, direct_channel=config.direct_channel)
    if model == "linear":
        return linear(touches, converted_at, revenue)
    if model == "time_decay":
        return time_decay(touches, converted_at, revenue, half_life_hours=config.half_life_hours)
    if model == "position_based":
        return position_based(touches, converted_at, revenue, weights=config.position_weights)
    if model in DATA_DRIVEN_MODELS:
        if snapshot is not None and snapshot.model != model:
            raise AttributionError(f"model {model} given a {snapshot.model} snapshot")
        return apply_snapshot(snapshot, touches, converted_at, revenue)
    raise AttributionError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


# -- Markov chain ----------------------------------------------------------------------


def _collapse_repeats(stats: PathStats) -> tuple[IntArray, IntArray]:
    """Codes and offsets with consecutive repeats of a channel collapsed into one."""
    codes = stats.codes
    if codes.size == 0:
        return codes, stats.offsets
    keep = np.ones(codes.size, dtype=np.bool_)
    keep[1:] = codes[1:] != codes[:-1]
    keep[stats.offsets[:-1]] = True
    kept_per_row = np.add.reduceat(keep.astype(np.int64), stats.offsets[:-1])
    offsets = np.zeros(len(stats) + 1, dtype=np.int64)
    np.cumsum(kept_per_row, out=offsets[1:])
    return codes[keep], offsets


@dataclass(frozen=True)
class _Chain:
    """Transition counts of an absorbing chain; transient state 0 is ``(start)``."""

    n_transient: int
    src: IntArray  # transient source state of every edge
    dst: IntArray  # destination; n_transient = (conversion), n_transient + 1 = (null)
    weight: FloatArray
    contains: BoolArray  # (n_transient, n_channels): state mentions channel


def _build_chain(stats: PathStats, order: int) -> _Chain:
    n_channels = len(stats.channels)
    codes, offsets = _collapse_repeats(stats)
    n_rows = len(stats)
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    base = n_channels + 1
    if order > 1 and order * math.log2(base) >= 62:
        raise AttributionError(
            f"markov order {order} over {n_channels} channels is too large to encode"
        )
    # State of every touch: the last min(order, j + 1) channels, most recent first, as
    # base-(C+1) digits (0 = "before the path started").
    keys = codes + 1
    if order > 1:
        position = np.arange(codes.size, dtype=np.int64) - offsets[row]
        scale = 1
        for back in range(1, order):
            scale *= base
            previous = np.zeros(codes.size, dtype=np.int64)
            previous[back:] = codes[:-back] + 1
            keys = keys + np.where(position >= back, previous, 0) * scale
    if order == 1:  # every channel of the vocabulary occurs: its state is its code + 1
        state = keys
        n_transient = n_channels + 1
        contains = np.zeros((n_transient, n_channels), dtype=np.bool_)
        contains[np.arange(1, n_transient), np.arange(n_channels)] = True
    else:
        state_keys, inverse = np.unique(keys, return_inverse=True)
        state = inverse.reshape(-1).astype(np.int64) + 1  # 0 is (start)
        n_transient = state_keys.size + 1
        contains = np.zeros((n_transient, n_channels), dtype=np.bool_)
        digits = state_keys.copy()
        for _ in range(order):
            digit = digits % base
            has = digit > 0
            contains[np.nonzero(has)[0] + 1, digit[has] - 1] = True
            digits //= base

    travellers = stats.conversions + stats.nulls
    first = offsets[:-1]
    last = offsets[1:] - 1
    inner = np.ones(codes.size, dtype=np.bool_)
    inner[last] = False
    inner_idx = np.nonzero(inner)[0]
    conversion, null = n_transient, n_transient + 1
    src = np.concatenate(
        [np.zeros(n_rows, dtype=np.int64), state[inner_idx], state[last], state[last]]
    )
    dst = np.concatenate(
        [
            state[first],
            state[inner_idx + 1],
            np.full(n_rows, conversion, dtype=np.int64),
            np.full(n_rows, null, dtype=np.int64),
        ]
    )
    weight = np.concatenate(
        [travellers, travellers[row[inner_idx]], stats.conversions, stats.nulls]
    )
    return _Chain(n_transient, src, dst, weight, contains)


def _absorption_dense(chain: _Chain, removals: Sequence[BoolArray]) -> list[float]:
    """P(start -> conversion) with each set of transient states removed (exact solve).

    One inversion of ``I - Q`` gives the fundamental matrix ``N``. Removing the states
    ``R`` (keeping ``K``) needs ``(I - Q_KK)^-1 = N_KK - N_KR N_RR^-1 N_RK``, so each
    removal costs a solve of size ``|R|`` (1 for a first-order chain), not ``n``.
    """
    n = chain.n_transient
    width = n + 2
    counts = _weighted_bincount(
        chain.src * width + chain.dst, weights=chain.weight, minlength=n * width
    ).reshape(n, width)
    out = counts.sum(axis=1)
    out[out == 0] = 1.0  # a state no weighted path leaves: identity row, absorbs nothing
    probabilities = counts / out[:, None]
    q = probabilities[:, :n]
    r = probabilities[:, n]
    try:
        fundamental = np.linalg.inv(np.eye(n) - q)
    except np.linalg.LinAlgError as exc:
        raise AttributionError("markov: singular transition system") from exc
    results = []
    for removed in removals:
        drop = np.nonzero(removed)[0]  # (start), state 0, is never removed
        keep = np.nonzero(~removed)[0]
        r_keep = r[keep]
        p = float(fundamental[0, keep] @ r_keep)
        if drop.size:
            through = fundamental[np.ix_(drop, keep)] @ r_keep
            try:
                correction = np.linalg.solve(fundamental[np.ix_(drop, drop)], through)
            except np.linalg.LinAlgError as exc:
                raise AttributionError("markov: singular transition system") from exc
            p -= float(fundamental[0, drop] @ correction)
        results.append(min(1.0, max(0.0, p)))
    return results


def _absorption_iterative(
    chain: _Chain, removals: Sequence[BoolArray], tolerance: float = 1e-14
) -> list[float]:
    """Same as :func:`_absorption_dense` by fixed-point iteration on the sparse edges.

    ``x = r + Q x`` from ``x = 0`` increases monotonically to the absorption
    probabilities; all removals iterate together as the columns of one matrix.
    """
    n = chain.n_transient
    width = n + 2
    edge_key, inverse = np.unique(chain.src * width + chain.dst, return_inverse=True)
    weight = _weighted_bincount(inverse.reshape(-1), weights=chain.weight, minlength=edge_key.size)
    src, dst = edge_key // width, edge_key % width
    out = _weighted_bincount(src, weights=weight, minlength=n)
    out[out == 0] = 1.0
    prob = weight / out[src]
    r = _weighted_bincount(src[dst == n], weights=prob[dst == n], minlength=n)
    moving = dst < n
    q_src, q_dst, q_prob = src[moving], dst[moving], prob[moving]  # sorted by src
    starts = np.nonzero(np.r_[True, q_src[1:] != q_src[:-1]])[0] if q_src.size else q_src
    rows = q_src[starts]
    keep = np.stack([~removed for removed in removals], axis=1).astype(np.float64)
    rhs = r[:, None] * keep
    x = rhs.copy()
    for _ in range(1_000_000):
        qx = np.zeros_like(x)
        if q_src.size:
            qx[rows] = np.add.reduceat(q_prob[:, None] * x[q_dst], starts, axis=0)
        updated = rhs + keep * qx
        delta = float(np.max(np.abs(updated - x)))
        x = updated
        if delta <= tolerance:
            break
    else:  # pragma: no cover - needs a chain that almost never leaves its states
        raise AttributionError("markov: iterative solve did not converge")
    return [float(v) for v in x[0]]


def fit_markov(paths: PathStats, order: int = 1) -> ChannelWeights:
    """Fit an absorbing Markov chain on converting and null paths; removal effects.

    States are ``(start)``, one state per channel (for ``order > 1``: per tuple of the
    last ``order`` channels, shorter at the beginning of a path), ``(conversion)`` and
    ``(null)``. Consecutive repeats of a channel are collapsed first. Each path row adds
    ``total_conversions + total_null`` to every transition along it, ``total_conversions``
    to last-state -> conversion and ``total_null`` to last-state -> null.

    ``P`` is the probability to be absorbed in ``(conversion)`` from ``(start)``, solved
    exactly from the fundamental matrix ``N = (I - Q)^-1``. Removing channel ``c``
    removes every state that mentions it, sending its inflow to ``(null)``, and
    ``RE(c) = 1 - P_without_c / P``; the reduced system is solved from ``N`` by a Schur
    complement (a 1x1 solve per channel at first order). The weights are
    ``RE(c) / sum(RE)``; ``RE(c)`` is never negative (removing states cannot add paths to
    conversion).

    Up to :data:`MARKOV_DENSE_STATE_LIMIT` transient states (every first- and
    second-order chain over 12 channels) the solve is dense and direct; above that
    (third order and up), by sparse fixed-point iteration ``x = r + Q x`` to an absolute
    1e-14, all removals at once.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise AttributionError(f"markov order must be an integer >= 1, got {order!r}")
    channels = paths.channels
    zeros = dict.fromkeys(channels, 0.0)
    if len(paths) == 0 or paths.total_conversions <= 0:
        return ChannelWeights(zeros, dict(zeros), 0.0, order, 0.0, paths.total_value)
    chain = _build_chain(paths, order)
    nothing = np.zeros(chain.n_transient, dtype=np.bool_)
    removals = [nothing, *(chain.contains[:, c] for c in range(len(channels)))]
    if chain.n_transient <= MARKOV_DENSE_STATE_LIMIT:
        probs = _absorption_dense(chain, removals)
    else:
        probs = _absorption_iterative(chain, removals)
    p_all = probs[0]
    effects = {c: max(0.0, 1.0 - p / p_all) for c, p in zip(channels, probs[1:], strict=True)}
    total = math.fsum(effects.values())
    weights = {c: (e / total if total > 0 else 0.0) for c, e in effects.items()}
    return ChannelWeights(
        weights=weights,
        removal_effects=effects,
        conversion_probability=p_all,
        order=order,
        total_conversions=paths.total_conversions,
        total_value=paths.total_value,
    )


# -- Shapley ---------------------------------------------------------------------------


def _factorial_weights(n: int) -> FloatArray:
    """``w[k] = k! (n-k-1)! / n!``: the Shapley weight of a coalition of size k."""
    full = math.factorial(n)
    return np.array(
        [math.factorial(k) * math.factorial(n - k - 1) / full for k in range(n)],
        dtype=np.float64,
    )


def _subset_tables(n: int) -> tuple[IntArray, IntArray, list[IntArray]]:
    """Local subsets of n players: membership (2^n, n), sizes, and per player j the
    subsets without j."""
    local = np.arange(1 << n, dtype=np.int64)
    member = (local[:, None] >> np.arange(n, dtype=np.int64)) & 1
    sizes = member.sum(axis=1)
    without = [local[member[:, j] == 0] for j in range(n)]
    return member, sizes, without


def _shapley_from_values(values: FloatArray, n: int) -> FloatArray:
    """Shapley values from ``values[s, m]`` = v of local subset m of set s; (sets, n)."""
    _, sizes, without = _subset_tables(n)
    weights = _factorial_weights(n)
    phi = np.empty((values.shape[0], n), dtype=np.float64)
    for j in range(n):
        idx = without[j]
        phi[:, j] = (values[:, idx | (1 << j)] - values[:, idx]) @ weights[sizes[idx]]
    return phi


def shapley_values(
    players: Sequence[str], value: Callable[[frozenset[str]], float]
) -> dict[str, float]:
    """Exact Shapley values of *players* for the characteristic function *value*.

    ``phi_c = sum over S of N minus c of |S|! (n-|S|-1)! / n! * (v(S + c) - v(S))``,
    evaluated with bitmasks over the ``2^n`` subsets (``v`` is called once per subset).
    """
    names = list(dict.fromkeys(players))
    n = len(names)
    if n == 0:
        return {}
    member, _, _ = _subset_tables(n)
    table = np.array(
        [value(frozenset(names[j] for j in range(n) if row[j])) for row in member.tolist()],
        dtype=np.float64,
    )
    phi = _shapley_from_values(table[None, :], n)[0]
    return {name: float(phi[j]) for j, name in enumerate(names)}


def _clip_normalise(phi: Mapping[str, float]) -> dict[str, float]:
    """Negative values to 0, then shares summing to 1 (equal split if all are 0)."""
    clipped = {c: max(0.0, v) for c, v in phi.items()}
    total = math.fsum(clipped.values())
    if total <= 0:
        return {c: 1.0 / len(clipped) for c in clipped} if clipped else {}
    return {c: v / total for c, v in clipped.items()}


@dataclass(frozen=True)
class _SetTable:
    """Aggregated channel sets: codes (sorted) of each set, conversions, value, nulls."""

    members: list[tuple[int, ...]]
    conversions: FloatArray
    value: FloatArray
    nulls: FloatArray
    rate: FloatArray
    masks: IntArray | None  # int64 bitmasks, sorted, when the vocabulary fits


def _channel_sets(stats: PathStats) -> _SetTable:
    n_channels = len(stats.channels)
    if len(stats) and n_channels <= _MAX_BITMASK_CHANNELS:
        bits = np.left_shift(np.int64(1), stats.codes)
        row_masks = np.bitwise_or.reduceat(bits, stats.offsets[:-1])
        masks, inverse = np.unique(row_masks, return_inverse=True)
        inverse = inverse.reshape(-1)
        membership = (masks[:, None] >> np.arange(n_channels, dtype=np.int64)) & 1
        members = [tuple(np.nonzero(m)[0].tolist()) for m in membership]
        bitmasks: IntArray | None = masks
    else:
        index: dict[frozenset[int], int] = {}
        row_sets = []
        for i in range(len(stats)):
            key = frozenset(stats.codes[stats.offsets[i] : stats.offsets[i + 1]].tolist())
            row_sets.append(index.setdefault(key, len(index)))
        inverse = np.asarray(row_sets, dtype=np.int64)
        members = [tuple(sorted(key)) for key in index]
        bitmasks = None
    size = len(members)
    conversions = _weighted_bincount(inverse, weights=stats.conversions, minlength=size)
    value = _weighted_bincount(inverse, weights=stats.value, minlength=size)
    nulls = _weighted_bincount(inverse, weights=stats.nulls, minlength=size)
    journeys = conversions + nulls
    rate = np.divide(conversions, journeys, out=np.zeros(size), where=journeys > 0)
    return _SetTable(members, conversions, value, nulls, rate, bitmasks)


def _set_shares(table: _SetTable, negatives: str = "clip") -> dict[int, FloatArray]:
    """Normalised Shapley shares of every converting set (by set index): negative values
    clipped to 0 first (``negatives="clip"``), or kept as DP6 does (``"keep"``)."""
    keep = _shapley_negatives(negatives) == "keep"
    converting = np.nonzero(table.conversions > 0)[0]
    by_size: dict[int, list[int]] = {}
    for s in converting.tolist():
        by_size.setdefault(len(table.members[s]), []).append(s)
    shares: dict[int, FloatArray] = {}
    big = [n for n in by_size if n > SHAPLEY_WARN_SET_SIZE]
    if big:
        warnings.warn(
            f"shapley: channel sets of up to {max(big)} channels; each costs 2^n subsets",
            RuntimeWarning,
            stacklevel=3,
        )
    lookup_rate: dict[frozenset[int], float] = {}
    if table.masks is None:
        lookup_rate = {
            frozenset(m): float(r) for m, r in zip(table.members, table.rate, strict=True)
        }
    for n, sets in by_size.items():
        member, _, _ = _subset_tables(n)
        block = max(1, _SUBSET_BLOCK // (1 << n))
        for start in range(0, len(sets), block):
            chunk = sets[start : start + block]
            positions = np.array([table.members[s] for s in chunk], dtype=np.int64)
            if table.masks is not None:
                bitvalues = np.left_shift(np.int64(1), positions)  # (sets, n)
                subset_masks = bitvalues @ member.T  # disjoint bits: sum == or
                found = np.searchsorted(table.masks, subset_masks)
                found = np.minimum(found, table.masks.size - 1)
                hit = table.masks[found] == subset_masks
                values = np.where(hit, table.rate[found], 0.0)
            else:
                values = np.array(
                    [
                        [
                            lookup_rate.get(
                                frozenset(p for p, b in zip(row, bits, strict=True) if b), 0.0
                            )
                            for bits in member.tolist()
                        ]
                        for row in positions.tolist()
                    ],
                    dtype=np.float64,
                )
            phi = _shapley_from_values(values, n)
            if not keep:
                phi = np.maximum(phi, 0.0)
            totals = phi.sum(axis=1, keepdims=True)
            # Unclipped values sum to v(N) > 0 for a converting set; clipped ones are >= it.
            normalised = np.divide(phi, totals, out=np.full_like(phi, 1.0 / n), where=totals > 0)
            for s, row in zip(chunk, normalised, strict=True):
                shares[s] = row
    return shares


def fit_shapley(paths: PathStats) -> ShapleyWeights:
    """Shapley values over channel sets, per converting set (DP6's definition).

    Each journey is reduced to its channel *set*. ``v(S)`` is the conversion rate of the
    journeys whose set is exactly ``S``: ``conversions(S) / (conversions(S) + nulls(S))``;
    a set never observed has ``v(S) = 0`` (as has the empty set). For every set ``N`` with
    conversions, each channel's Shapley value ``phi_c(N)`` over the subsets of ``N`` is
    computed exactly (bitmask enumeration, no size cap: ``2^|N|`` subsets, so very large
    sets are slow and warn above :data:`SHAPLEY_WARN_SET_SIZE` channels); negative values
    are clipped to 0 and the rest normalised within ``N`` (equal split if all are 0).
    ``N``'s conversions and value are then split by those shares.
    """
    channels = paths.channels
    table = _channel_sets(paths)
    shares = _set_shares(table)
    conversions_by_channel = np.zeros(len(channels))
    set_values: dict[frozenset[str], float] = {}
    set_shares: dict[frozenset[str], Mapping[str, float]] = {}
    set_conversions: dict[frozenset[str], float] = {}
    set_revenue: dict[frozenset[str], float] = {}
    for s, members in enumerate(table.members):
        key = frozenset(channels[c] for c in members)
        set_values[key] = float(table.rate[s])
        row = shares.get(s)
        if row is not None:
            set_shares[key] = {channels[c]: float(w) for c, w in zip(members, row, strict=True)}
            set_conversions[key] = float(table.conversions[s])
            set_revenue[key] = float(table.value[s])
            conversions_by_channel[list(members)] += row * table.conversions[s]
    total = paths.total_conversions
    weights = {
        c: (float(conversions_by_channel[i]) / total if total > 0 else 0.0)
        for i, c in enumerate(channels)
    }
    return ShapleyWeights(
        set_values=set_values,
        set_shares=set_shares,
        set_conversions=set_conversions,
        set_revenue=set_revenue,
        weights=weights,
        total_conversions=total,
        total_value=paths.total_value,
    )


def fit_snapshot(
    model: str, paths: PathStats, config: AttributionConfig = DEFAULT_CONFIG
) -> ChannelWeights | ShapleyWeights:
    """Fit the snapshot of a data-driven model (``markov`` or ``shapley``)."""
    if model == "markov":
        return fit_markov(paths, config.markov_order)
    if model == "shapley":
        return fit_shapley(paths)
    raise AttributionError(
        f"{model!r} is not a data-driven model ({', '.join(DATA_DRIVEN_MODELS)})"
    )


# -- batch over a path file ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChannelTotals:
    """Conversions and value attributed to every channel by one model."""

    model: str
    channels: tuple[str, ...]
    conversions: FloatArray
    value: FloatArray

    @property
    def total_conversions(self) -> float:
        return float(self.conversions.sum())

    @property
    def total_value(self) -> float:
        return float(self.value.sum())

    def as_dict(self) -> dict[str, tuple[float, float]]:
        """``{channel: (conversions, value)}``."""
        return {
            c: (float(self.conversions[i]), float(self.value[i]))
            for i, c in enumerate(self.channels)
        }


def _touch_shares(stats: PathStats, model: str, config: AttributionConfig) -> FloatArray:
    """For every touch of every row, its share of the row's credit (rows sum to 1)."""
    n_touches = stats.codes.size
    first = stats.offsets[:-1]
    last = stats.offsets[1:] - 1
    lengths = stats.lengths
    shares = np.zeros(n_touches, dtype=np.float64)
    if n_touches == 0:
        return shares
    if model == "first_touch":
        shares[first] = 1.0
    elif model == "last_touch":
        shares[last] = 1.0
    elif model == "last_non_direct":
        direct = (
            stats.channels.index(config.direct_channel)
            if (config.direct_channel in stats.channels)
            else -1
        )
        candidate = np.where(stats.codes != direct, np.arange(n_touches, dtype=np.int64), -1)
        latest = np.maximum.reduceat(candidate, first)
        shares[np.where(latest >= first, latest, last)] = 1.0
    elif model == "linear":
        shares = np.repeat(1.0 / lengths, lengths)
    elif model == "time_decay":
        row = stats.row_ids()
        steps_before = (last[row] - np.arange(n_touches, dtype=np.int64)).astype(np.float64)
        raw = np.power(0.5, steps_before * (config.touch_interval_hours / config.half_life_hours))
        shares = raw / np.add.reduceat(raw, first)[row]
    elif model == "position_based":
        w_first, w_middle, w_last = _position_shares(config.position_weights)
        row = stats.row_ids()
        length = lengths[row]
        shares = np.where(length > 2, w_middle / np.maximum(length - 2, 1), 0.0)
        ends = w_first + w_last
        two_first, two_last = (w_first / ends, w_last / ends) if ends > 0 else (0.5, 0.5)
        shares[first] = np.where(lengths == 2, two_first, w_first)
        shares[last] = np.where(lengths == 2, two_last, w_last)
        shares[first[lengths == 1]] = 1.0
    else:
        raise AttributionError(f"{model!r} is not a rule-based model")
    return shares


def heuristic_totals(
    stats: PathStats, model: str, config: AttributionConfig = DEFAULT_CONFIG
) -> ChannelTotals:
    """Per-channel conversions and value of a rule-based model over a path file.

    A row contributes ``total_conversions x`` (and ``total_conversion_value x``) the credit
    that one conversion on its path gets. Computed for all rows at once.
    """
    shares = _touch_shares(stats, model, config)
    row = stats.row_ids()
    n_channels = len(stats.channels)
    conversions = _weighted_bincount(
        stats.codes, weights=shares * stats.conversions[row], minlength=n_channels
    )
    value = _weighted_bincount(stats.codes, weights=shares * stats.value[row], minlength=n_channels)
    return ChannelTotals(model, stats.channels, conversions, value)


def markov_totals(stats: PathStats, order: int = 1) -> ChannelTotals:
    """``weights[c] x`` total conversions (and total value) from :func:`fit_markov`."""
    snapshot = fit_markov(stats, order)
    weights = np.array([snapshot.weights[c] for c in stats.channels], dtype=np.float64)
    return ChannelTotals(
        "markov",
        stats.channels,
        weights * stats.total_conversions,
        weights * stats.total_value,
    )


def _shapley_negatives(negatives: str) -> str:
    if negatives not in SHAPLEY_NEGATIVES:
        raise AttributionError(
            f"shapley negatives {negatives!r}: expected one of {', '.join(SHAPLEY_NEGATIVES)}"
        )
    return negatives


def shapley_totals(stats: PathStats, negatives: str = "clip") -> ChannelTotals:
    """Each converting set's conversions and value split by its Shapley shares.

    ``negatives="clip"`` (the default, as the stream does) clips negative Shapley values
    to 0 before normalising; ``"keep"`` normalises the raw values, negative shares
    included, which reproduces DP6 ``attribution_shapley`` with full coalitions and
    ``values_col="conv_rate"`` (see docs/attribution.md).
    """
    table = _channel_sets(stats)
    shares = _set_shares(table, negatives)
    n_channels = len(stats.channels)
    conversions = np.zeros(n_channels)
    value = np.zeros(n_channels)
    for s, row in shares.items():
        members = list(table.members[s])
        conversions[members] += row * table.conversions[s]
        value[members] += row * table.value[s]
    return ChannelTotals("shapley", stats.channels, conversions, value)


def attribute_paths(
    stats: PathStats,
    models: Iterable[str] = MODELS,
    config: AttributionConfig = DEFAULT_CONFIG,
    shapley_negatives: str = "clip",
) -> dict[str, ChannelTotals]:
    """Run *models* over aggregated paths; ``{model: ChannelTotals}`` in the given order.

    Every model's conversions add up to the file's total conversions (and its value to
    the total value), up to floating-point rounding. *shapley_negatives* (``clip`` or
    ``keep``) is passed to :func:`shapley_totals`.
    """
    _shapley_negatives(shapley_negatives)
    results: dict[str, ChannelTotals] = {}
    for model in models:
        if model in RULE_BASED_MODELS:
            results[model] = heuristic_totals(stats, model, config)
        elif model == "markov":
            results[model] = markov_totals(stats, config.markov_order)
        elif model == "shapley":
            results[model] = shapley_totals(stats, shapley_negatives)
        else:
            raise AttributionError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    return results
