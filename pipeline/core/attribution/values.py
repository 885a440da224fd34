"""The shared vocabulary of attribution: the model names (:data:`MODELS`), the error,
the touches and credits the per-conversion models read and return, and the models'
tunables (:class:`AttributionConfig`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

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

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _weighted_bincount(index: IntArray, weights: FloatArray, minlength: int = 0) -> FloatArray:
    """``numpy.bincount`` with weights, typed as the float array it returns."""
    return np.asarray(np.bincount(index, weights=weights, minlength=minlength), dtype=np.float64)


class AttributionError(Exception):
    """Attribution cannot be computed from these inputs (bad touches, config or data)."""


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
