"""User agents: bots and crawlers, and the device type, from maintained lists.

Bots are recognised with the ``crawler-user-agents`` list (monitor-bots, SEO crawlers,
HTTP libraries, headless browsers; case-sensitive patterns, as the list intends), and
with uap-core's own ``Spider`` device. Browser, OS and device come from ``ua-parser``
(uap-core's regexes); the device *type* is read from its answer: uap-core names
devices (``iPad``, ``Samsung SMART-TV``, ``PlayStation 5``) but has no type, so
:func:`_device_type` maps its families, brands and OS families onto ``desktop``,
``mobile``, ``tablet``, ``tv``, ``console`` and ``bot``. Results are cached per user
agent: real traffic repeats a few thousand of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import crawleruseragents
from ua_parser import parse

#: uap-core brands and families that mean a television or a TV stick.
_TV_OS = frozenset({"Tizen", "Web0S", "webOS", "ATV OS X", "tvOS", "Roku", "Android TV"})
_TV_WORDS = ("TV", "SmartTV", "Smart-TV", "Chromecast", "Roku", "FireTV", "BRAVIA")
#: Amazon Fire TV models start with AFT (AFTMM, AFTT, ...).
_FIRE_TV_PREFIX = "AFT"
_CONSOLE_BRANDS = frozenset({"Nintendo"})
_CONSOLE_WORDS = ("PlayStation", "Xbox", "Nintendo", "Ouya")
_TABLET_FAMILIES = frozenset({"iPad", "Kindle", "Generic Tablet", "Nexus 7", "Nexus 9", "Nexus 10"})
_TABLET_BRANDS = frozenset({"Generic_Android_Tablet"})
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD", "Debian"}
)
MAX_AGENT = 1024


@dataclass(frozen=True, slots=True)
class UserAgent:
    """What one user agent string says about the visitor."""

    is_bot: bool
    device_type: str | None
    os: str | None
    browser: str | None


def is_bot(agent: str) -> bool:
    """True when *agent* is a known crawler, monitor, HTTP library or headless browser."""
    return describe(agent).is_bot


@lru_cache(maxsize=8192)
def describe(agent: str) -> UserAgent:
    """Bot flag, device type, OS and browser family of one ``User-Agent`` string."""
    agent = agent[:MAX_AGENT]
    result = parse(agent)
    ua = result.user_agent
    os_ = result.os
    device = result.device
    browser = ua.family if ua is not None and ua.family != "Other" else None
    os_family = os_.family if os_ is not None and os_.family != "Other" else None
    family = device.family if device is not None else ""
    brand = (device.brand or "") if device is not None else ""
    model = (device.model or "") if device is not None else ""
    spider = family == "Spider"
    bot = spider or bool(agent.strip()) and crawleruseragents.is_crawler(agent)
    kind = "bot" if bot else _device_type(agent, family, brand, model, os_family)
    return UserAgent(bot, kind, os_family, browser)


def _device_type(
    agent: str, family: str, brand: str, model: str, os_family: str | None
) -> str | None:
    names = f"{family} {model}"
    if (
        os_family in _TV_OS
        or model.startswith(_FIRE_TV_PREFIX)
        or any(word in names for word in _TV_WORDS)
        or family == "AppleTV"
    ):
        return "tv"
    # uap-core leaves Xbox browsers without a device: their token is the only trace.
    if brand in _CONSOLE_BRANDS or any(w in names for w in _CONSOLE_WORDS) or "Xbox" in agent:
        return "console"
    if family in _TABLET_FAMILIES or brand in _TABLET_BRANDS:
        return "tablet"
    if os_family in _MOBILE_OS or family in ("iPhone", "iPod", "Generic Smartphone"):
        return "mobile"
    if family == "Generic Feature Phone":
        return "mobile"
    if os_family in _DESKTOP_OS or family == "Mac":
        return "desktop"
    return "other" if os_family or family not in ("", "Other") else None
