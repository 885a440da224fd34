"""Multi-touch attribution: six rule-based models and two data-driven ones, as pure code
over plain values and numpy (no Faust, Kafka, ClickHouse or environment); the models
and their guarantees are described in ``docs/attribution.md``."""

from __future__ import annotations

from pipeline.core.attribution.batch import (
    ChannelTotals,
    attribute_paths,
    heuristic_totals,
    markov_totals,
    shapley_totals,
)
from pipeline.core.attribution.markov import MARKOV_DENSE_STATE_LIMIT, ChannelWeights, fit_markov
from pipeline.core.attribution.rules import (
    first_touch,
    last_non_direct,
    last_touch,
    linear,
    position_based,
    time_decay,
)
from pipeline.core.attribution.shapley import (
    SHAPLEY_NEGATIVES,
    SHAPLEY_WARN_SET_SIZE,
    ShapleyWeights,
    fit_shapley,
    shapley_values,
)
from pipeline.core.attribution.snapshots import (
    ModelSnapshot,
    apply_snapshot,
    attribute_conversion,
    fit_snapshot,
    snapshot_from_record,
)
from pipeline.core.attribution.values import (
    DATA_DRIVEN_MODELS,
    DEFAULT_CONFIG,
    DEFAULT_HALF_LIFE_HOURS,
    DEFAULT_POSITION_WEIGHTS,
    DEFAULT_TOUCH_INTERVAL_HOURS,
    DIRECT_CHANNEL,
    MODELS,
    RULE_BASED_MODELS,
    AttributionConfig,
    AttributionError,
    BoolArray,
    FloatArray,
    IntArray,
    Touch,
    TouchCredit,
    TouchLike,
)
from pipeline.core.paths import PathRow, PathStats

__all__ = [
    "DATA_DRIVEN_MODELS",
    "DEFAULT_CONFIG",
    "DEFAULT_HALF_LIFE_HOURS",
    "DEFAULT_POSITION_WEIGHTS",
    "DEFAULT_TOUCH_INTERVAL_HOURS",
    "DIRECT_CHANNEL",
    "MARKOV_DENSE_STATE_LIMIT",
    "MODELS",
    "RULE_BASED_MODELS",
    "SHAPLEY_NEGATIVES",
    "SHAPLEY_WARN_SET_SIZE",
    "AttributionConfig",
    "AttributionError",
    "BoolArray",
    "ChannelTotals",
    "ChannelWeights",
    "FloatArray",
    "IntArray",
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
