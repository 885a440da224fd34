"""The six rule-based models for one conversion: each takes the touches of a conversion
(:class:`~pipeline.core.attribution.values.Touch`, or any
:class:`~pipeline.core.attribution.values.TouchLike`), the conversion time and its revenue,
and returns one :class:`~pipeline.core.attribution.values.TouchCredit` per touch, aligned
with the input list. Credits sum to 1 and revenue credits sum to the revenue (both within
1e-9; the rounding residue goes to the largest share)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from pipeline.core.attribution.values import (
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_POSITION_WEIGHTS,
    DIRECT_CHANNEL,
    AttributionError,
    TouchCredit,
    TouchLike,
    _position_shares,
)


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
