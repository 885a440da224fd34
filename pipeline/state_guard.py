"""The worker's state belongs to one broker: never mix it with another one's topics.

The worker keeps its tables on disk (``JOURNEYS_DATA_DIR``) and their changelogs and
consumed offsets in the broker. If the broker's data is gone (its folder deleted, an
in-memory broker restarted, another cluster at the same address), the local state
would be applied to topics that no longer hold what it was built from. So beside the
state we record the cluster id of the broker it was built with (``broker.json``), and
refuse to start on a different one, with the recovery in the message
(docs/persistence.md).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pipeline.settings import Settings

log = logging.getLogger(__name__)

MARKER = "broker.json"


class StateGuardError(RuntimeError):
    """The worker's state was built with another broker than the one that answers."""


def has_state(data_dir: Path) -> bool:
    """True when *data_dir* holds worker state (anything but the marker)."""
    if not data_dir.is_dir():
        return False
    return any(path.name != MARKER for path in data_dir.iterdir())


def recorded_cluster(data_dir: Path) -> str | None:
    """The cluster id recorded beside the state in *data_dir*, or None."""
    path = data_dir / MARKER
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text()).get("cluster_id")
    except (OSError, ValueError) as exc:
        raise StateGuardError(f"{path} is unreadable ({exc}); see docs/persistence.md") from exc
    return str(value) if value else None


def mismatch_message(settings: Settings, recorded: str, current: str) -> str:
    return (
        f"the worker state in {settings.data_dir} was built with the broker whose cluster id "
        f"is {recorded!r}, but the broker on {settings.kafka_bootstrap} is {current!r}: the "
        "broker's data is gone (its folder deleted, an in-memory broker restarted) or this "
        "is another broker. Journeys will not mix the old state with it. To recover: "
        "`journeys reset` (removes the broker data, the worker state and the ClickHouse "
        "tables; then replay your logs with `journeys replay`), or point "
        "JOURNEYS_BROKER_DIR / JOURNEYS_KAFKA_BOOTSTRAP back to the original broker. "
        "See docs/persistence.md."
    )


def check_state(settings: Settings, current: str) -> None:
    """Record *current* (the broker's cluster id) beside the worker state, or raise
    :class:`StateGuardError` if the state there was built with another broker."""
    data_dir = settings.data_dir
    recorded = recorded_cluster(data_dir)
    if recorded is not None and recorded != current and has_state(data_dir):
        raise StateGuardError(mismatch_message(settings, recorded, current))
    if recorded == current:
        return
    if has_state(data_dir):
        log.warning(
            "worker state in %s has no broker record (built before it was kept); "
            "adopting broker %s",
            data_dir,
            current,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "cluster_id": current,
        "bootstrap": settings.kafka_bootstrap,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = data_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(data_dir / MARKER)


def guard(settings: Settings) -> None:
    """:func:`check_state` with the cluster id of the broker on ``kafka_bootstrap``."""
    from pipeline.broker import cluster_id

    current = cluster_id(settings.kafka_bootstrap, client_config=settings.kafka_config())
    if current is None:
        raise StateGuardError(f"no Kafka broker answers on {settings.kafka_bootstrap}")
    check_state(settings, current)
