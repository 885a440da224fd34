"""Crediting one conversion (the stream): :func:`attribute_conversion` under any model.
The data-driven models learn a snapshot (:class:`ChannelWeights` for Markov,
:class:`ShapleyWeights` for Shapley) from aggregated paths (:func:`fit_snapshot`). A
conversion's credit is then the snapshot's weights of the *distinct* channels of its own
path, normalised over those channels, each channel's share split evenly among its
touches. If every channel of the path has weight 0 (or is unknown to the snapshot), or no
snapshot is given yet, the conversion is credited like ``linear``."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pipeline.core.attribution.markov import ChannelWeights, fit_markov
from pipeline.core.attribution.rules import (
    _check_conversion,
    _credits,
    first_touch,
    last_non_direct,
    last_touch,
    linear,
    position_based,
    time_decay,
)
from pipeline.core.attribution.shapley import ShapleyWeights, fit_shapley
from pipeline.core.attribution.values import (
    DATA_DRIVEN_MODELS,
    DEFAULT_CONFIG,
    MODELS,
    AttributionConfig,
    AttributionError,
    TouchCredit,
    TouchLike,
)
from pipeline.core.paths import PathStats


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
