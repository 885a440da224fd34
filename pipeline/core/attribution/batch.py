"""Attribution over a path file (batch, ``journeys attribute``): :func:`attribute_paths`
runs the models over aggregated paths (:class:`~pipeline.core.paths.PathStats`) and
returns, per model, every channel's attributed conversions and value
(:class:`ChannelTotals`). The rule-based models are vectorised over the rows; a row with
``total_conversions = n`` gives ``n x`` the credit of one conversion on that path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.core.attribution.markov import fit_markov
from pipeline.core.attribution.shapley import _channel_sets, _set_shares, _shapley_negatives
from pipeline.core.attribution.values import (
    DEFAULT_CONFIG,
    MODELS,
    RULE_BASED_MODELS,
    AttributionConfig,
    AttributionError,
    FloatArray,
    _position_shares,
    _weighted_bincount,
)
from pipeline.core.paths import PathStats


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
