"""Which touchpoints count for journeys, attribution and the learned models.

Bots and crawlers (``is_bot``) and events without a consent category the operator
requires (``JOURNEYS_REQUIRED_CONSENT``) are stored in ``touchpoints`` with their
flags, but make no touch, no journey, no credit and no path for the data-driven
models. The journey stage calls :func:`counts_for_journeys` on each touchpoint before
it joins a journey.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def counts_for_journeys(touchpoint: Mapping[str, Any], required_consent: frozenset[str]) -> bool:
    """False for a bot, and for an event that lacks a granted category of
    *required_consent*; *touchpoint* is a Touchpoint record (``schemas/Touchpoint.avsc``).

    A category counts as granted only when the event's ``consent`` maps it to true: an
    event that says nothing about consent lacks every required category. With no
    required category (the default), consent is not looked at.
    """
    if touchpoint.get("is_bot"):
        return False
    if not required_consent:
        return True
    consent = touchpoint.get("consent")
    if not isinstance(consent, Mapping):
        return False
    return all(consent.get(category) is True for category in required_consent)
