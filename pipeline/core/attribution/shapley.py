"""The ``shapley`` model: Shapley values over channel sets with the observed conversion
rate of each exact set as the characteristic function (:func:`fit_shapley`), and its
snapshot, :class:`ShapleyWeights`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.attribution.values import (
    AttributionError,
    FloatArray,
    IntArray,
    _weighted_bincount,
)
from pipeline.core.paths import PathStats

#: What ``attribute --paths`` may do with negative Shapley values: clip them to 0 (the
#: default, as the stream does) or keep them (DP6 ``marketing-attribution-models``).
SHAPLEY_NEGATIVES: tuple[str, ...] = ("clip", "keep")
#: Channel sets larger than this make :func:`fit_shapley` warn (2^n subsets each).
SHAPLEY_WARN_SET_SIZE = 20

_MAX_BITMASK_CHANNELS = 62
_SUBSET_BLOCK = 1 << 22  # elements per vectorised Shapley block (~32 MiB of float64)


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


def _shapley_negatives(negatives: str) -> str:
    if negatives not in SHAPLEY_NEGATIVES:
        raise AttributionError(
            f"shapley negatives {negatives!r}: expected one of {', '.join(SHAPLEY_NEGATIVES)}"
        )
    return negatives
