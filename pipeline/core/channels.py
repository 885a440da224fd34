"""Channel grouping: which marketing channel brought a web or app touch.

Web and app traffic follows Google Analytics 4's *default channel group*, rule for rule
and in GA4's order, with Google's own source-category list shipped as data
(``data/ga4_source_categories.csv``) and Journeys' few additions in a second file
(``data/journeys_additions.toml``). :func:`session_source` gives a visit GA4's session
source / medium / campaign (Google click id, UTM parameters, other click ids, referrer,
direct); :meth:`ChannelRules.classify` maps them to a channel. Non-web sources are
mapped by :mod:`pipeline.core.source_channels`. The rules, the list, and every place
where Journeys differs from GA4 are described in ``docs/journeys.md``. Everything here
is pure: the data files are read once at import, from the package.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from importlib.resources import files
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from pipeline.core.model import Campaign

# --------------------------------------------------------------------------------------
# Channel names
# --------------------------------------------------------------------------------------

DIRECT = "direct"
UNASSIGNED = "unassigned"

#: GA4's default channel groups, in GA4's evaluation order, as snake_case names.
WEB_CHANNELS: tuple[str, ...] = (
    *("direct", "cross_network", "paid_shopping", "paid_search", "paid_social", "paid_video"),
    *("display", "paid_other", "organic_shopping", "organic_social", "organic_video"),
    *("organic_search", "referral", "email", "affiliate", "audio", "sms", "push"),
)

#: Channels of touches that do not happen on the website or the app.
OFFLINE_CHANNELS: tuple[str, ...] = ("store", "marketplace", "call_center", "chat")

#: Every channel name Journeys produces. App traffic has no channel of its own: an app
#: session is classified like a web visit (campaign, deep-link referrer) and is ``direct``
#: when it carries none.
CHANNELS: tuple[str, ...] = (*WEB_CHANNELS, *OFFLINE_CHANNELS, UNASSIGNED)

#: Channels that a marketer pays for per click, impression or placement.
PAID_CHANNELS: frozenset[str] = frozenset(
    {"cross_network", "paid_shopping", "paid_search", "paid_social", "paid_video", "display"}
    | {"paid_other", "affiliate", "audio"}
)


class ChannelRulesError(ValueError):
    """A channel rule from configuration or a data file cannot be used (names the key)."""


class ClickId(NamedTuple):
    """A click-id query parameter and the source / medium it stands for.

    ``overrides_utm`` mirrors GA4 auto-tagging: a Google click id wins over UTM
    parameters; the others only fill in when the UTM source and medium are missing.
    """

    param: str
    source: str
    medium: str
    overrides_utm: bool = False


# --------------------------------------------------------------------------------------
# Source lists (data files)
# --------------------------------------------------------------------------------------

#: Source categories. On a name listed under two of them the first wins.
CATEGORIES: tuple[str, ...] = ("email", "shopping", "social", "video", "search")

_GOOGLE_CATEGORIES = {f"SOURCE_CATEGORY_{c.upper()}": c for c in CATEGORIES if c != "email"}

GOOGLE_LIST_FILE = "ga4_source_categories.csv"
ADDITIONS_FILE = "journeys_additions.toml"


def apply_set_override(base: frozenset[str], value: Any, key: str) -> frozenset[str]:
    """A name set from configuration: a list replaces *base*; ``{add, remove}`` edits it.

    Shared by the channel and journey rules so both config sections behave alike.
    """
    if isinstance(value, str):
        raise ChannelRulesError(f"{key}: expected a list of strings or a table with add/remove")
    if isinstance(value, Mapping):
        unknown = set(value) - {"add", "remove"}
        if unknown:
            raise ChannelRulesError(f"{key}: unknown keys {sorted(unknown)} (use add/remove)")
        result = set(base)
        result |= _names(value.get("add", ()), f"{key}.add")
        result -= _names(value.get("remove", ()), f"{key}.remove")
        return frozenset(result)
    return frozenset(_names(value, key))


def _names(value: Any, key: str) -> set[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ChannelRulesError(f"{key}: expected a list of strings")
    out: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ChannelRulesError(f"{key}: every entry must be a non-empty string")
        out.add(item.strip().lower())
    return out


def parse_source_list(text: str, name: str) -> dict[str, str]:
    """Google's source-category list (CSV ``source,source_category``) as name -> category.

    Blank lines, ``#`` comment lines and the header row are skipped. A category is
    Google's ``SOURCE_CATEGORY_SEARCH`` ... or a plain ``search``. Names are trimmed and
    lower-cased (GA4's channel definitions ignore case). A bad row raises
    :class:`ChannelRulesError` naming *name* and the line.
    """
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line]))
        if len(row) < 2 or not row[0].strip():
            raise ChannelRulesError(f"{name}:{n}: expected 'source,source_category'")
        source, raw = row[0].strip().lower(), row[1].strip()
        if source == "source" and raw.lower() == "source_category":
            continue
        category = _GOOGLE_CATEGORIES.get(raw.upper(), raw.lower())
        if category not in CATEGORIES:
            raise ChannelRulesError(f"{name}:{n}: {source}: unknown category {raw!r}")
        if out.get(source, category) != category:
            raise ChannelRulesError(f"{name}:{n}: {source} is listed twice, as two categories")
        out[source] = category
    return out


class Additions(NamedTuple):
    """Journeys' additions: source -> category, source -> reason, and click ids."""

    sources: dict[str, str]
    reasons: dict[str, str]
    click_ids: tuple[ClickId, ...]


def parse_additions(text: str, name: str) -> Additions:
    """Journeys' additions file (TOML ``[[sources]]`` and ``[[click_ids]]`` tables)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChannelRulesError(f"{name}: not valid TOML: {exc}") from exc
    sources: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for i, group in enumerate(data.get("sources", [])):
        key = f"{name}: sources[{i}]"
        category, reason = group.get("category"), group.get("reason")
        if category not in CATEGORIES or not isinstance(reason, str):
            expected = ", ".join(CATEGORIES)
            raise ChannelRulesError(f"{key}: needs a category ({expected}) and a reason")
        for source in _names(group.get("names"), f"{key}.names"):
            sources[source] = category
            reasons[source] = reason
    click_ids: list[ClickId] = []
    for i, group in enumerate(data.get("click_ids", [])):
        key = f"{name}: click_ids[{i}]"
        ids = group.get("ids")
        if not isinstance(group.get("reason"), str) or not isinstance(ids, list):
            raise ChannelRulesError(f"{key}: needs a reason and ids = [[param, source, medium]]")
        for spec in ids:
            if not isinstance(spec, list) or [type(s) for s in spec] != [str, str, str]:
                raise ChannelRulesError(f"{key}: {spec!r} is not [param, source, medium]")
            click_ids.append(ClickId(*(s.strip().lower() for s in spec)))
    return Additions(sources, reasons, tuple(click_ids))


def read_data(file: str) -> str:
    """A data file shipped in ``pipeline/core/data/``."""
    return (files("pipeline.core") / "data" / file).read_text(encoding="utf-8")


#: Google's source-category list, as shipped: source -> search/shopping/social/video.
GA4_SOURCE_CATEGORIES: Mapping[str, str] = MappingProxyType(
    parse_source_list(read_data(GOOGLE_LIST_FILE), GOOGLE_LIST_FILE)
)
_ADDITIONS = parse_additions(read_data(ADDITIONS_FILE), ADDITIONS_FILE)

#: Journeys' additions that Google's list does not hold (Google's list wins a clash).
JOURNEYS_SOURCE_ADDITIONS: Mapping[str, str] = MappingProxyType(
    {s: c for s, c in _ADDITIONS.sources.items() if s not in GA4_SOURCE_CATEGORIES}
)
#: Why each of :data:`JOURNEYS_SOURCE_ADDITIONS` is there (also in docs/journeys.md).
ADDITION_REASONS: Mapping[str, str] = MappingProxyType(_ADDITIONS.reasons)


def _listed(category: str) -> tuple[str, ...]:
    merged = {**JOURNEYS_SOURCE_ADDITIONS, **GA4_SOURCE_CATEGORIES}
    return tuple(sorted(s for s, c in merged.items() if c == category))


SEARCH_SOURCES = _listed("search")
SOCIAL_SOURCES = _listed("social")
SHOPPING_SOURCES = _listed("shopping")
VIDEO_SOURCES = _listed("video")
#: Webmail hosts and mail apps (a Journeys addition: GA4 has no e-mail source list).
EMAIL_SOURCES = _listed("email")

#: Google's click ids: with auto-tagging they win over UTM parameters, as in GA4.
GA4_CLICK_IDS: tuple[ClickId, ...] = (
    ClickId("gclid", "google", "cpc", True),
    ClickId("wbraid", "google", "cpc", True),
    ClickId("gbraid", "google", "cpc", True),
    ClickId("dclid", "dv360", "display", True),
)
#: Every click id read by default: Google's, then Journeys' additions.
CLICK_IDS: tuple[ClickId, ...] = (*GA4_CLICK_IDS, *_ADDITIONS.click_ids)

# Second-level labels of country domains (google.co.uk, amazon.com.br, yahoo.co.jp).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob"})

_SET_FIELDS = (
    "search_sources",
    "social_sources",
    "shopping_sources",
    "video_sources",
    "email_sources",
    "display_mediums",
    "social_mediums",
    "organic_mediums",
    "referral_mediums",
    "email_mediums",
    "affiliate_mediums",
    "audio_mediums",
    "sms_values",
    "push_sources",
    "ignored_referrers",
)
_REGEX_FIELDS = (
    "paid_medium_regex",
    "video_medium_regex",
    "push_medium_regex",
    "shopping_campaign_regex",
    "cross_network_campaign_regex",
)


def _source_overrides(rules: ChannelRules, value: Any) -> dict[str, Any]:
    """The five source sets after ``[channels.sources]``: ``name = "category"`` or ``"none"``."""
    if not isinstance(value, Mapping):
        raise ChannelRulesError('sources: expected a table of "source" = "category"')
    sets = {c: set(getattr(rules, f"{c}_sources")) for c in CATEGORIES}
    for raw, category in value.items():
        key = f'sources."{raw}"'
        name = str(raw).strip().lower()
        cat = category.strip().lower() if isinstance(category, str) else None
        if not name or cat not in (*CATEGORIES, "none"):
            raise ChannelRulesError(
                f"{key}: expected one of {', '.join(CATEGORIES)} or none, got {category!r}"
            )
        for members in sets.values():
            members.discard(name)
        if cat != "none":
            sets[cat].add(name)
    return {f"{c}_sources": frozenset(s) for c, s in sets.items()}


@dataclass(frozen=True)
class ChannelRules:
    """The data behind the channel grouping; the defaults are GA4's plus Journeys' additions.

    Build a variant with :meth:`from_dict` (for a config file) or
    :func:`dataclasses.replace`. Lookups are cached per instance, so keep one instance
    per process rather than building one per event.
    """

    search_sources: frozenset[str] = frozenset(SEARCH_SOURCES)
    social_sources: frozenset[str] = frozenset(SOCIAL_SOURCES)
    shopping_sources: frozenset[str] = frozenset(SHOPPING_SOURCES)
    video_sources: frozenset[str] = frozenset(VIDEO_SOURCES)
    email_sources: frozenset[str] = frozenset(EMAIL_SOURCES)
    click_ids: tuple[ClickId, ...] = CLICK_IDS
    paid_medium_regex: str = r"^(.*cp.*|ppc|retargeting|paid.*)$"
    display_mediums: frozenset[str] = frozenset(
        {"display", "banner", "expandable", "interstitial", "cpm"}
    )
    social_mediums: frozenset[str] = frozenset(
        {"social", "social-network", "social-media", "sm", "social network", "social media"}
    )
    video_medium_regex: str = r"^(.*video.*)$"
    organic_mediums: frozenset[str] = frozenset({"organic"})
    referral_mediums: frozenset[str] = frozenset({"referral", "app", "link"})
    #: GA4's e-mail values, for the source and for the medium.
    email_mediums: frozenset[str] = frozenset({"email", "e-mail", "e_mail", "e mail"})
    affiliate_mediums: frozenset[str] = frozenset({"affiliate"})
    audio_mediums: frozenset[str] = frozenset({"audio"})
    sms_values: frozenset[str] = frozenset({"sms"})
    push_medium_regex: str = r"(push$|mobile|notification)"
    push_sources: frozenset[str] = frozenset({"firebase"})
    shopping_campaign_regex: str = r"^(.*(([^a-df-z]|^)shop|shopping).*)$"
    cross_network_campaign_regex: str = r"cross-network"
    #: GA4's "unwanted referrals": hosts (and their subdomains) that count as no
    #: referrer, e.g. payment pages such as ``paypal.com`` or your own other domains.
    ignored_referrers: frozenset[str] = frozenset()
    cache_size: int = 65536

    _paid: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _video: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _push: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _shop_campaign: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _cross_network: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _index: dict[str, str] = field(init=False, repr=False, compare=False)
    _click_by_param: dict[str, ClickId] = field(init=False, repr=False, compare=False)
    _url_probe: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _entry_cached: Callable[[str], str | None] = field(init=False, repr=False, compare=False)
    _classify_cached: Callable[[str, str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def compile_(name: str) -> re.Pattern[str]:
            pattern = getattr(self, name)
            try:
                return re.compile(pattern)
            except re.error as exc:
                raise ChannelRulesError(f"{name}: invalid regex {pattern!r}: {exc}") from exc

        set_ = object.__setattr__
        set_(self, "_paid", compile_("paid_medium_regex"))
        set_(self, "_video", compile_("video_medium_regex"))
        set_(self, "_push", compile_("push_medium_regex"))
        set_(self, "_shop_campaign", compile_("shopping_campaign_regex"))
        set_(self, "_cross_network", compile_("cross_network_campaign_regex"))
        index: dict[str, str] = {}
        for category in reversed(CATEGORIES):  # on a name listed twice, the first wins
            for name in getattr(self, f"{category}_sources"):
                index[name.strip().lower()] = category
        set_(self, "_index", index)
        set_(self, "_click_by_param", {c.param.lower(): c for c in self.click_ids})
        params = "|".join(re.escape(c.param) for c in self.click_ids)
        probe = rf"[?&;](?:utm_[a-z]+|{params})=" if params else r"[?&;]utm_[a-z]+="
        set_(self, "_url_probe", re.compile(probe, re.IGNORECASE))
        set_(self, "_entry_cached", lru_cache(maxsize=self.cache_size)(self._entry))
        set_(self, "_classify_cached", lru_cache(maxsize=self.cache_size)(self._classify))

    # -- configuration -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: ChannelRules | None = None) -> ChannelRules:
        """Rules from a config mapping (e.g. the ``[channels]`` table of a TOML file).

        * ``sources``: a table ``"source" = "category"`` (search, social, shopping,
          video, email or none) that moves single entries of the lists;
        * name sets (``search_sources``, ``display_mediums``, ``ignored_referrers``...):
          a list replaces the default, a table ``{add = [...], remove = [...]}`` edits it;
        * regexes (``paid_medium_regex``...): a string;
        * ``click_ids``: a table ``param = [source, medium]`` or
          ``param = {source, medium, overrides_utm}`` added to (or, with ``false``,
          removed from) the defaults.

        Unknown keys are an error, so a typo never silently keeps a default.
        """
        base = base if base is not None else cls()
        known = {f.name for f in fields(cls) if f.init}
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "sources":
                continue
            if key not in known:
                raise ChannelRulesError(f"{key}: unknown channel rule")
            if key in _SET_FIELDS:
                changes[key] = apply_set_override(getattr(base, key), value, key)
            elif key in _REGEX_FIELDS:
                if not isinstance(value, str):
                    raise ChannelRulesError(f"{key}: expected a regex string")
                changes[key] = value
            elif key == "click_ids":
                changes[key] = _click_ids_from_config(base.click_ids, value)
            elif key == "cache_size":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ChannelRulesError(f"{key}: expected a non-negative integer")
                changes[key] = value
        rules = replace(base, **changes)
        if "sources" in data:
            rules = replace(rules, **_source_overrides(rules, data["sources"]))
        return rules

    def to_dict(self) -> dict[str, Any]:
        """The rules as plain data, readable back with :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for name in _SET_FIELDS:
            out[name] = sorted(getattr(self, name))
        for name in _REGEX_FIELDS:
            out[name] = getattr(self, name)
        click_ids: dict[str, Any] = {
            c.param: {"source": c.source, "medium": c.medium, "overrides_utm": c.overrides_utm}
            for c in self.click_ids
        }
        for default in CLICK_IDS:  # defaults this rule set dropped, so from_dict drops them
            click_ids.setdefault(default.param, False)
        out["click_ids"] = click_ids
        out["cache_size"] = self.cache_size
        return out

    # -- lookups -----------------------------------------------------------------------

    def listed_category(self, source: str) -> str | None:
        """The category of *source* when the list holds exactly that name (GA4's match)."""
        return self._index.get(source.strip().lower())

    def list_entry(self, source: str) -> str | None:
        """The list entry a source or referrer host falls under, or None.

        The exact name first (GA4's match). Only for a host that is not listed, the
        fallback: the host without ``www.``, its nearest listed parent domain, then, for
        a bare registrable domain, its name (``google`` for ``www.google.co.uk``).
        """
        return self._entry_cached(source.strip().lower())

    def source_category(self, source: str) -> str | None:
        """``search``, ``social``, ``shopping``, ``video``, ``email`` or None for a source.

        *source* is a UTM source (``google``), a host (``m.facebook.com``) or an Android
        package; matched as :meth:`list_entry` says.
        """
        entry = self.list_entry(source)
        return self._index[entry] if entry is not None else None

    def click_id(self, param: str) -> ClickId | None:
        return self._click_by_param.get(param.lower())

    def classify(self, source: str | None, medium: str | None, campaign: str | None) -> str:
        """The GA4 channel of a session source / medium / campaign name (any case)."""
        return self._classify_cached(
            (source or "").strip().lower(),
            (medium or "").strip().lower(),
            (campaign or "").strip().lower(),
        )

    def _entry(self, source: str) -> str | None:
        index = self._index
        if source in index:
            return source
        if "." not in source:
            return None
        host = source[4:] if source.startswith("www.") else source
        labels = host.split(".")
        for i in range(len(labels) - 1):
            parent = ".".join(labels[i:])
            if parent in index:
                return parent
        # The brand only for the registrable domain itself (google.co.uk, not
        # gemini.google.com: a service of Google is not Google's search).
        bare_domain = len(labels) == 2 or (len(labels) == 3 and labels[1] in _SECOND_LEVEL)
        brand = _registrable_name(labels) if bare_domain else None
        return brand if brand in index else None

    def _classify(self, source: str, medium: str, campaign: str) -> str:
        if source == "(direct)" and medium in ("(none)", "(not set)", ""):
            return "direct"
        if campaign and self._cross_network.search(campaign):
            return "cross_network"
        category = self._index.get(source) if source else None
        paid = bool(medium) and self._paid.match(medium) is not None
        shop_campaign = bool(campaign) and self._shop_campaign.match(campaign) is not None
        shopping = category == "shopping" or shop_campaign
        if paid:
            if shopping:
                return "paid_shopping"
            if category == "search":
                return "paid_search"
            if category == "social":
                return "paid_social"
            if category == "video":
                return "paid_video"
        if medium in self.display_mediums:
            return "display"
        if paid:
            return "paid_other"
        if shopping:
            return "organic_shopping"
        if category == "social" or medium in self.social_mediums:
            return "organic_social"
        if category == "video" or (medium and self._video.match(medium)):
            return "organic_video"
        if category == "search" or medium in self.organic_mediums:
            return "organic_search"
        if medium in self.referral_mediums:
            return "referral"
        emails = self.email_mediums
        if category == "email" or source in emails or medium in emails:
            return "email"
        if medium in self.affiliate_mediums:
            return "affiliate"
        if medium in self.audio_mediums:
            return "audio"
        if source in self.sms_values or medium in self.sms_values:
            return "sms"
        if (medium and self._push.search(medium)) or source in self.push_sources:
            return "push"
        return UNASSIGNED


def _click_ids_from_config(base: tuple[ClickId, ...], value: Any) -> tuple[ClickId, ...]:
    if not isinstance(value, Mapping):
        raise ChannelRulesError("click_ids: expected a table of param = [source, medium]")
    by_param = {c.param: c for c in base}
    for param, spec in value.items():
        key = f"click_ids.{param}"
        if spec is None or spec is False:
            by_param.pop(param, None)
            continue
        if isinstance(spec, Mapping):
            src, med = spec.get("source"), spec.get("medium")
            override = spec.get("overrides_utm", False)
        elif isinstance(spec, list | tuple) and len(spec) == 2:
            src, med = spec
            override = False
        else:
            raise ChannelRulesError(f"{key}: expected [source, medium] or a table")
        if not isinstance(src, str) or not isinstance(med, str) or not isinstance(override, bool):
            raise ChannelRulesError(f"{key}: source and medium must be strings")
        by_param[param] = ClickId(param.lower(), src.lower(), med.lower(), override)
    return tuple(by_param.values())


def _registrable_name(labels: list[str]) -> str | None:
    """``google`` for ``www.google.co.uk``: the label before the public suffix (approx.)."""
    if len(labels) < 2:
        return None
    rest = labels[:-1]
    if len(rest) >= 2 and rest[-1] in _SECOND_LEVEL:
        rest = rest[:-1]
    return rest[-1] or None


DEFAULT = ChannelRules()


class _Active:
    """The rules this process ingests with when a caller names none (:func:`use_rules`)."""

    rules: ChannelRules = DEFAULT


def use_rules(rules: ChannelRules) -> None:
    """Make *rules* the default of :func:`web_channel`, :func:`source_channel` and
    :func:`campaign_from_url` in this process. The CLI calls it at start with the rules
    file's ``[channels]``, so the collector and ``journeys replay`` ingest with them."""
    _Active.rules = rules


def active_rules() -> ChannelRules:
    return _Active.rules


# --------------------------------------------------------------------------------------
# Web and app traffic
# --------------------------------------------------------------------------------------


def host_of(url: str | None) -> str | None:
    """The lower-cased host of a URL (``www.`` kept), or None when there is none.

    Accepts bare hosts (``google.com/search``) and app referrers
    (``android-app://com.google.android.gm/``).
    """
    if not url:
        return None
    text = url.strip()
    if "//" not in text:
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return host or None


def _bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def is_same_site(referrer_host: str, page_host: str) -> bool:
    """True when one host is the other or a subdomain of it, ignoring ``www.``."""
    a, b = _bare(referrer_host), _bare(page_host)
    return _within(a, b) or _within(b, a)


def campaign_from_url(url: str | None, rules: ChannelRules | None = None) -> Campaign | None:
    """The UTM parameters and the first known click id of a landing-page URL.

    The click id keeps its parameter name: ``gclid=abc`` becomes ``click_id="gclid:abc"``,
    which is how :func:`web_channel` tells a Google click from a TikTok one. Returns None
    when the URL carries neither.
    """
    rules = rules or _Active.rules
    if not url or "?" not in url or rules._url_probe.search(url) is None:
        return None
    try:
        query = urlsplit(url).query
        pairs = parse_qsl(query, keep_blank_values=False)
    except ValueError:
        return None
    params: dict[str, str] = {}
    for key, value in pairs:
        low = key.lower()
        if low not in params and value.strip():
            params[low] = value.strip()
    click_id = None
    for click in rules.click_ids:
        found = params.get(click.param)
        if found:
            click_id = f"{click.param}:{found}"
            break
    camp = Campaign(
        source=params.get("utm_source"),
        medium=params.get("utm_medium"),
        name=params.get("utm_campaign"),
        content=params.get("utm_content"),
        term=params.get("utm_term"),
        click_id=click_id,
    )
    return None if camp.is_empty() else camp


def _fill(given: Campaign, parsed: Campaign) -> Campaign:
    return Campaign(
        source=given.source or parsed.source,
        medium=given.medium or parsed.medium,
        name=given.name or parsed.name,
        content=given.content or parsed.content,
        term=given.term or parsed.term,
        click_id=given.click_id or parsed.click_id,
    )


def session_source(
    campaign: Campaign | None,
    referrer: str | None,
    page_url: str | None = None,
    rules: ChannelRules | None = None,
) -> tuple[str, str, str | None]:
    """GA4's session ``(source, medium, campaign name)`` for a visit.

    Precedence: a Google click id (auto-tagging) > UTM source/medium > any other known
    click id > the referrer > ``(direct) / (none)``. A referrer on the page's own site,
    or listed in ``rules.ignored_referrers``, is no referrer.
    """
    rules = rules or _Active.rules
    if campaign is not None and campaign.is_empty():
        campaign = None
    if page_url and "?" in page_url:
        parsed = campaign_from_url(page_url, rules)
        if parsed is not None:
            campaign = parsed if campaign is None else _fill(campaign, parsed)
    name = campaign.name if campaign is not None else None
    click: ClickId | None = None
    if campaign is not None and campaign.click_id and ":" in campaign.click_id:
        click = rules.click_id(campaign.click_id.split(":", 1)[0])
    if click is not None and click.overrides_utm:
        return click.source, click.medium, name
    if campaign is not None and (campaign.source or campaign.medium):
        return campaign.source or "(not set)", campaign.medium or "(not set)", name
    if click is not None:
        return click.source, click.medium, name
    host = host_of(referrer)
    if host is None:
        return "(direct)", "(none)", name
    bare = _bare(host)
    page_host = host_of(page_url)
    if page_host is not None and is_same_site(host, page_host):
        return "(direct)", "(none)", name
    if any(_within(bare, _bare(d)) for d in rules.ignored_referrers):
        return "(direct)", "(none)", name
    # A listed host is its own source; an unlisted one takes the entry it falls under
    # (``www.google.co.uk`` -> ``google``), as GA4 reports ``google / organic``.
    entry = rules.list_entry(bare)
    category = rules.listed_category(entry) if entry is not None else None
    medium = "organic" if category == "search" else "email" if category == "email" else "referral"
    return entry or bare, medium, name


def web_channel(
    campaign: Campaign | None,
    referrer: str | None,
    page_url: str | None = None,
    rules: ChannelRules | None = None,
) -> str:
    """The GA4 default channel group of a web or app visit, as a snake_case name.

    *campaign* is the visit's UTM context (Segment's ``context.campaign``), *referrer*
    the document referrer and *page_url* the landing page, whose UTM parameters and
    click ids fill in whatever *campaign* lacks. A self-referral is ``direct``.
    """
    rules = rules or _Active.rules
    source, medium, name = session_source(campaign, referrer, page_url, rules)
    return rules.classify(source, medium, name)
