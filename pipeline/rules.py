"""The rules file: identity, journey and channel rules in one TOML file (``JOURNEYS_RULES_FILE``).

.. code-block:: toml

    [identity]
    limits = { email_sha256 = 5, loyalty_id = "unlimited" }
    super_node_threshold = 3
    blocklist_extra = ["guest@shop.example.com"]

    [journeys]
    session_timeout = "30m"
    lookback = "30d"

    [channels.sources]
    "chatgpt.com" = "search"

    [segments.abandoned_cart]
    cart_open_for = "24h"

Every table is optional; a missing file name means the defaults. An error names the
file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.channels import ChannelRules, ChannelRulesError
from pipeline.core.identity import IdentityError, IdentityRules
from pipeline.core.journeys import JourneyConfigError, JourneyRules
from pipeline.core.segments import SegmentConfigError, SegmentRules

_SECTIONS = ("identity", "journeys", "channels", "segments")


class RulesFileError(ValueError):
    """The rules file cannot be read or holds invalid rules."""


@dataclass(frozen=True)
class Rules:
    identity: IdentityRules = field(default_factory=IdentityRules)
    journeys: JourneyRules = field(default_factory=JourneyRules)
    channels: ChannelRules = field(default_factory=ChannelRules)
    segments: SegmentRules = field(default_factory=SegmentRules)


def load_rules(path: Path | None) -> Rules:
    """The rules of *path* (TOML), or the defaults when *path* is None."""
    if path is None:
        return Rules()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesFileError(f"{path}: cannot read the rules file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(k for k in data if k not in _SECTIONS)
    if unknown:
        raise RulesFileError(
            f"{path}: unknown section(s) {', '.join(unknown)}; expected {', '.join(_SECTIONS)}"
        )
    try:
        identity = IdentityRules.from_mapping(data.get("identity", {}))
    except IdentityError as exc:
        raise RulesFileError(f"{path}: [identity] {exc}") from exc
    try:
        journeys = JourneyRules.from_dict(data.get("journeys", {}))
    except JourneyConfigError as exc:
        raise RulesFileError(f"{path}: [journeys] {exc}") from exc
    try:
        channels = ChannelRules.from_dict(data.get("channels", {}))
    except ChannelRulesError as exc:
        raise RulesFileError(f"{path}: [channels] {exc}") from exc
    try:
        segments = SegmentRules.from_dict(data.get("segments", {}))
    except SegmentConfigError as exc:
        raise RulesFileError(f"{path}: [segments] {exc}") from exc
    return Rules(identity, journeys, channels, segments)
