"""The ``markov`` model: removal effects of an absorbing Markov chain fitted on converting
*and* null paths (:func:`fit_markov`), computed exactly from the fundamental matrix of the
chain (no simulation), and its snapshot, :class:`ChannelWeights`."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.attribution.values import (
    AttributionError,
    BoolArray,
    FloatArray,
    IntArray,
    _weighted_bincount,
)
from pipeline.core.paths import PathStats

#: Above this many transient states a Markov chain is solved iteratively, not densely.
MARKOV_DENSE_STATE_LIMIT = 1000


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
