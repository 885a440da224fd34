"""Channel grouping: which marketing channel brought a touch.

Web and app traffic follows Google Analytics 4's *default channel group* for manual
(UTM) traffic, rule for rule and in GA4's order (see ``docs/journeys.md``):

1. ``direct``            source is ``(direct)`` and medium is ``(none)`` / ``(not set)``
2. ``cross_network``     campaign name contains ``cross-network``
3. ``paid_shopping``     (source is a shopping site OR campaign name matches the shopping
                         regex) AND medium matches ``^(.*cp.*|ppc|retargeting|paid.*)$``
4. ``paid_search``       source is a search engine AND paid medium
5. ``paid_social``       source is a social network AND paid medium
6. ``paid_video``        source is a video site AND paid medium
7. ``display``           medium is display, banner, expandable, interstitial or cpm
8. ``paid_other``        paid medium
9. ``organic_shopping``  source is a shopping site OR shopping campaign name
10. ``organic_social``   source is a social network OR medium is social, sm, ...
11. ``organic_video``    source is a video site OR medium contains ``video``
12. ``organic_search``   source is a search engine OR medium is ``organic``
13. ``referral``         medium is referral, app or link
14. ``email``            source or medium is email, e-mail, e_mail or "e mail"
15. ``affiliate``        medium is affiliate
16. ``audio``            medium is audio
17. ``sms``              source or medium is sms
18. ``push``             medium ends with ``push`` or contains ``mobile`` / ``notification``,
                         or source is ``firebase``
19. ``unassigned``       anything else.

Source and medium come from the UTM parameters when there are any; otherwise from a
known click id (``gclid`` means ``google / cpc`` ...); otherwise from the referrer
(a search engine gives ``<host> / organic``, any other site ``<host> / referral``);
otherwise the visit is ``(direct) / (none)``. Values are lower-cased and trimmed
before matching, so ``utm_medium=Email`` is e-mail too.

Non-web sources (SendGrid, Twilio, point of sale, Shopify sales channels, ad-click
exports, chat, call centre) are mapped by :func:`source_channel`.

Everything here is pure: no I/O, no environment. The domain lists and regexes are data
in :class:`ChannelRules`, which a config file can extend with :meth:`ChannelRules.from_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
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
    "direct",
    "cross_network",
    "paid_shopping",
    "paid_search",
    "paid_social",
    "paid_video",
    "display",
    "paid_other",
    "organic_shopping",
    "organic_social",
    "organic_video",
    "organic_search",
    "referral",
    "email",
    "affiliate",
    "audio",
    "sms",
    "push",
)

#: Channels of touches that do not happen on the website or the app.
OFFLINE_CHANNELS: tuple[str, ...] = ("store", "marketplace", "call_center", "chat")

#: Every channel name Journeys produces. App traffic has no channel of its own: an app
#: session is classified like a web visit (campaign, deep-link referrer) and is ``direct``
#: when it carries none.
CHANNELS: tuple[str, ...] = (*WEB_CHANNELS, *OFFLINE_CHANNELS, UNASSIGNED)

#: Channels that a marketer pays for per click, impression or placement.
PAID_CHANNELS: frozenset[str] = frozenset(
    {
        "cross_network",
        "paid_shopping",
        "paid_search",
        "paid_social",
        "paid_video",
        "display",
        "paid_other",
        "affiliate",
        "audio",
    }
)


class ChannelRulesError(ValueError):
    """A channel rule from configuration cannot be used (names the key)."""


# --------------------------------------------------------------------------------------
# Source lists (data). An entry without a dot is a *name*: it matches a UTM source of
# that name and any host whose registrable name is that name (``google`` matches
# ``www.google.co.uk``). An entry with a dot is a *domain*: it matches that host and its
# subdomains (``t.co``, ``l.facebook.com``). Android app referrers
# (``android-app://com.google.android.gm``) match by package name.
# --------------------------------------------------------------------------------------

SEARCH_SOURCES: tuple[str, ...] = (
    "google",
    "bing",
    "yahoo",
    "duckduckgo",
    "baidu",
    "yandex",
    "ecosia",
    "naver",
    "daum",
    "ask",
    "aol",
    "seznam",
    "qwant",
    "startpage",
    "search.brave.com",
    "sogou",
    "so.com",
    "360.cn",
    "haosou",
    "sm.cn",
    "coccoc",
    "go.mail.ru",
    "rambler",
    "search.msn.com",
    "lycos",
    "dogpile",
    "excite",
    "webcrawler",
    "info.com",
    "mojeek",
    "kagi",
    "you.com",
    "presearch",
    "petalsearch",
    "metager",
    "swisscows",
    "search.lilo.org",
    "yippy",
    "search.avg.com",
    "search.norton.com",
    "search.aol.com",
    "alice",
    "virgilio",
    "libero",
    "onet",
    "najdi",
    "search.seznam.cz",
    "search.yahoo.com",
    "msn",
    "com.google.android.googlequicksearchbox",
)

SOCIAL_SOURCES: tuple[str, ...] = (
    "facebook",
    "fb",
    "fb.me",
    "m.facebook.com",
    "l.facebook.com",
    "lm.facebook.com",
    "messenger.com",
    "instagram",
    "ig",
    "l.instagram.com",
    "threads.net",
    "twitter",
    "t.co",
    "x.com",
    "linkedin",
    "lnkd.in",
    "pinterest",
    "pin.it",
    "reddit",
    "tiktok",
    "snapchat",
    "tumblr",
    "quora",
    "vk",
    "vkontakte",
    "ok.ru",
    "odnoklassniki",
    "weibo",
    "weixin",
    "wechat",
    "douban",
    "zhihu",
    "xiaohongshu",
    "tieba.baidu.com",
    "kakao",
    "story.kakao.com",
    "mixi",
    "discord",
    "mastodon.social",
    "bsky.app",
    "medium.com",
    "meetup",
    "nextdoor",
    "xing",
    "yelp",
    "tripadvisor",
    "stackoverflow",
    "stackexchange",
    "news.ycombinator.com",
    "producthunt",
    "glassdoor",
    "goodreads",
    "flickr",
    "deviantart",
    "slideshare",
    "disqus",
    "digg",
    "plurk",
    "myspace",
    "ask.fm",
    "blogger",
    "blogspot",
    "wordpress.com",
    "line.me",
    "com.facebook.katana",
    "com.facebook.orca",
    "com.facebook.lite",
    "com.instagram.android",
    "com.twitter.android",
    "com.linkedin.android",
    "com.pinterest",
    "com.reddit.frontpage",
    "com.zhiliaoapp.musically",
    "com.ss.android.ugc.trill",
    "com.snapchat.android",
)

SHOPPING_SOURCES: tuple[str, ...] = (
    "amazon",
    "ebay",
    "etsy",
    "walmart",
    "aliexpress",
    "alibaba",
    "shopping.google.com",
    "google shopping",
    "igshopping",
    "shop.app",
    "shopify",
    "mercadolibre",
    "mercadolivre",
    "rakuten",
    "target",
    "bestbuy",
    "zalando",
    "otto",
    "allegro",
    "shopee",
    "lazada",
    "flipkart",
    "jd.com",
    "taobao",
    "tmall",
    "wish",
    "wayfair",
    "overstock",
    "newegg",
    "bol.com",
    "cdiscount",
    "kaufland",
    "temu",
    "shein",
    "idealo",
    "pricerunner",
    "shopping.yahoo.com",
    "shopping.naver.com",
    "stripe.shop",
    "com.amazon.mshop.android.shopping",
    "com.ebay.mobile",
)

VIDEO_SOURCES: tuple[str, ...] = (
    "youtube",
    "youtu.be",
    "vimeo",
    "twitch",
    "dailymotion",
    "netflix",
    "hulu",
    "ted.com",
    "wistia",
    "bilibili",
    "iqiyi",
    "youku",
    "rumble",
    "tv.naver.com",
    "video.yahoo.com",
    "com.google.android.youtube",
)

#: Webmail clients. GA4 has no such list (its Email rule only reads source/medium); a
#: referral from a webmail host is given the medium ``email`` so that it lands in Email.
EMAIL_SOURCES: tuple[str, ...] = (
    "email",
    "e-mail",
    "e_mail",
    "e mail",
    "mail.google.com",
    "outlook.live.com",
    "outlook.office.com",
    "outlook.office365.com",
    "mail.yahoo.com",
    "mail.aol.com",
    "mail.yandex.ru",
    "e.mail.ru",
    "mail.proton.me",
    "webmail",
    "com.google.android.gm",
    "com.microsoft.office.outlook",
)


class ClickId(NamedTuple):
    """A click-id query parameter and the source / medium it stands for.

    ``overrides_utm`` mirrors GA4 auto-tagging: a Google click id wins over UTM
    parameters; the others only fill in when the UTM source and medium are missing.
    """

    param: str
    source: str
    medium: str
    overrides_utm: bool = False


#: ``fbclid`` is appended by Facebook and Instagram to *every* outbound link, organic
#: posts included, so it means organic social; paid Meta ads are told apart by their UTM
#: medium (``paid_social``, ``cpc``...). ``ttclid``, ``li_fat_id``, ``twclid``... are
#: added to ad clicks only, so they mean paid social.
CLICK_IDS: tuple[ClickId, ...] = (
    ClickId("gclid", "google", "cpc", True),
    ClickId("wbraid", "google", "cpc", True),
    ClickId("gbraid", "google", "cpc", True),
    ClickId("dclid", "dv360", "display", True),
    ClickId("msclkid", "bing", "cpc"),
    ClickId("yclid", "yandex", "cpc"),
    ClickId("ttclid", "tiktok", "cpc"),
    ClickId("li_fat_id", "linkedin", "cpc"),
    ClickId("twclid", "twitter", "cpc"),
    ClickId("sccid", "snapchat", "cpc"),
    ClickId("epik", "pinterest", "cpc"),
    ClickId("rdt_cid", "reddit", "cpc"),
    ClickId("fbclid", "facebook", "referral"),
    ClickId("irclickid", "impact", "affiliate"),
    ClickId("cjevent", "cj", "affiliate"),
    ClickId("awc", "awin", "affiliate"),
    ClickId("mc_cid", "mailchimp", "email"),
    ClickId("_kx", "klaviyo", "email"),
)

# Second-level labels of country domains (google.co.uk, amazon.com.br, yahoo.co.jp).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob"})

_CATEGORIES = ("email", "shopping", "social", "video", "search")

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


@dataclass(frozen=True)
class ChannelRules:
    """The data behind the channel grouping; the defaults are GA4's.

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
    _category_cached: Callable[[str], str | None] = field(init=False, repr=False, compare=False)
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
        # On a name listed twice, the first category wins: email, shopping, social,
        # video, search (GA4's rule order, with the webmail extension first).
        for category in reversed(_CATEGORIES):
            for name in getattr(self, f"{category}_sources"):
                index[name.strip().lower()] = category
        set_(self, "_index", index)
        set_(self, "_click_by_param", {c.param.lower(): c for c in self.click_ids})
        params = "|".join(re.escape(c.param) for c in self.click_ids)
        probe = rf"[?&;](?:utm_[a-z]+|{params})=" if params else r"[?&;]utm_[a-z]+="
        set_(self, "_url_probe", re.compile(probe, re.IGNORECASE))
        set_(self, "_category_cached", lru_cache(maxsize=self.cache_size)(self._category))
        set_(self, "_classify_cached", lru_cache(maxsize=self.cache_size)(self._classify))

    # -- configuration -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: ChannelRules | None = None) -> ChannelRules:
        """Rules from a config mapping (e.g. the ``[channels]`` table of a TOML file).

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
        return replace(base, **changes)

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

    def source_category(self, source: str) -> str | None:
        """``search``, ``social``, ``shopping``, ``video``, ``email`` or None for a source.

        *source* is a UTM source (``google``), a host (``m.facebook.com``) or an Android
        package. The most specific entry wins: the whole host, then its parent domains,
        then its registrable name (``google`` for ``www.google.co.uk``).
        """
        return self._category_cached(source.strip().lower())

    def click_id(self, param: str) -> ClickId | None:
        return self._click_by_param.get(param.lower())

    def classify(self, source: str | None, medium: str | None, campaign: str | None) -> str:
        """The GA4 channel of a session source / medium / campaign name."""
        return self._classify_cached(
            (source or "").strip().lower(),
            (medium or "").strip().lower(),
            (campaign or "").strip().lower(),
        )

    def _category(self, source: str) -> str | None:
        index = self._index
        hit = index.get(source)
        if hit is not None or "." not in source:
            return hit
        host = source[4:] if source.startswith("www.") else source
        labels = host.split(".")
        for i in range(len(labels) - 1):
            hit = index.get(".".join(labels[i:]))
            if hit is not None:
                return hit
        brand = _registrable_name(labels)
        return index.get(brand) if brand else None

    def _classify(self, source: str, medium: str, campaign: str) -> str:
        if source == "(direct)" and medium in ("(none)", "(not set)", ""):
            return "direct"
        if campaign and self._cross_network.search(campaign):
            return "cross_network"
        category = self._category_cached(source) if source else None
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
        if category == "email" or medium in self.email_mediums:
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


def campaign_from_url(url: str | None, rules: ChannelRules = DEFAULT) -> Campaign | None:
    """The UTM parameters and the first known click id of a landing-page URL.

    The click id keeps its parameter name: ``gclid=abc`` becomes ``click_id="gclid:abc"``,
    which is how :func:`web_channel` tells a Google click from a TikTok one. Returns None
    when the URL carries neither.
    """
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
    rules: ChannelRules = DEFAULT,
) -> tuple[str, str, str | None]:
    """GA4's session ``(source, medium, campaign name)`` for a visit.

    Precedence: a Google click id (auto-tagging) > UTM source/medium > any other known
    click id > the referrer > ``(direct) / (none)``. A referrer on the page's own site,
    or listed in ``rules.ignored_referrers``, is no referrer.
    """
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
    category = rules.source_category(bare)
    medium = "organic" if category == "search" else "email" if category == "email" else "referral"
    return bare, medium, name


def web_channel(
    campaign: Campaign | None,
    referrer: str | None,
    page_url: str | None = None,
    rules: ChannelRules = DEFAULT,
) -> str:
    """The GA4 default channel group of a web or app visit, as a snake_case name.

    *campaign* is the visit's UTM context (Segment's ``context.campaign``), *referrer*
    the document referrer and *page_url* the landing page, whose UTM parameters and
    click ids fill in whatever *campaign* lacks. A self-referral is ``direct``.
    """
    source, medium, name = session_source(campaign, referrer, page_url, rules)
    return rules.classify(source, medium, name)


# --------------------------------------------------------------------------------------
# Non-web sources
# --------------------------------------------------------------------------------------

#: Ad platforms of the ad-click export, by the channel of their clicks.
AD_PLATFORMS: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "google",
            "google_ads",
            "adwords",
            "google_search",
            "bing",
            "microsoft",
            "microsoft_ads",
            "bing_ads",
            "yahoo",
            "yahoo_japan",
            "baidu",
            "yandex",
            "naver",
            "apple_search_ads",
            "search_ads_360",
            "sa360",
        ),
        "paid_search",
    ),
    **dict.fromkeys(
        (
            "meta",
            "facebook",
            "facebook_ads",
            "instagram",
            "tiktok",
            "tiktok_ads",
            "linkedin",
            "linkedin_ads",
            "pinterest",
            "snap",
            "snapchat",
            "twitter",
            "x",
            "reddit",
            "quora",
        ),
        "paid_social",
    ),
    **dict.fromkeys(("youtube", "youtube_ads", "google_video"), "paid_video"),
    **dict.fromkeys(
        (
            "display",
            "dv360",
            "display_video_360",
            "gdn",
            "google_display",
            "criteo",
            "the_trade_desk",
            "thetradedesk",
            "ttd",
            "taboola",
            "outbrain",
            "adroll",
            "amazon_dsp",
            "rtb_house",
            "xandr",
        ),
        "display",
    ),
    **dict.fromkeys(
        (
            "google_shopping",
            "shopping",
            "amazon",
            "amazon_ads",
            "walmart_connect",
            "ebay_ads",
        ),
        "paid_shopping",
    ),
    **dict.fromkeys(
        ("performance_max", "pmax", "demand_gen", "cross_network", "cross-network"),
        "cross_network",
    ),
    **dict.fromkeys(("spotify", "spotify_ads", "audio", "podcast", "audacy"), "audio"),
    **dict.fromkeys(("affiliate", "impact", "awin", "cj", "rakuten_advertising"), "affiliate"),
}

#: Shopify ``source_name`` values: the online store, the point of sale, staff-made orders.
SHOPIFY_ONLINE = frozenset({"web", "online_store", "checkout", "580111", "buy_button"})
SHOPIFY_POS = frozenset({"pos", "shopify_pos", "point_of_sale", "129785"})
SHOPIFY_UNATTRIBUTED = frozenset({"shopify_draft_order", "draft_order", "iphone", "android"})

_EMAIL_SOURCES = frozenset({"sendgrid", "mailchimp", "klaviyo", "braze_email", "email"})
_SMS_SOURCES = frozenset({"twilio", "sms", "attentive", "postscript"})
_PUSH_SOURCES = frozenset({"push", "firebase", "fcm", "apns", "onesignal", "braze_push"})
_STORE_SOURCES = frozenset({"pos", "store", "square"})
_CHAT_SOURCES = frozenset({"chat", "intercom", "zendesk_chat", "livechat", "drift"})
_CALL_SOURCES = frozenset({"call_center", "callcenter", "phone", "voice"})
_MARKETPLACE_SOURCES = frozenset({"marketplace", "amazon", "ebay", "etsy", "walmart"})
_WEB_SOURCES = frozenset({"segment", "rudderstack", "web", "app"})


def _norm(value: str | None) -> str:
    return (value or "").strip().lower().replace(" ", "_")


def source_channel(
    source: str,
    event_type: str,
    *,
    campaign: Campaign | None = None,
    referrer: str | None = None,
    page_url: str | None = None,
    sales_channel: str | None = None,
    platform: str | None = None,
    rules: ChannelRules = DEFAULT,
) -> str:
    """The channel of an event from a non-web source (and of Segment web/app events).

    * ``sendgrid`` -> ``email``; ``twilio`` -> ``sms`` (a Twilio ``call`` -> ``call_center``);
      ``push`` (and ``push_*`` event types) -> ``push``; ``pos`` -> ``store``;
    * ``shopify`` by *sales_channel* (the order's ``source_name``): POS -> ``store``,
      the online store -> the GA4 channel of the order's landing page and referrer,
      draft / staff orders -> ``unassigned``, any other sales channel (Amazon, eBay,
      Facebook & Instagram shops, other apps) -> ``marketplace``;
    * ``ads`` by *platform*: search engines -> ``paid_search``, Meta / TikTok / LinkedIn /
      Pinterest / Snap ... -> ``paid_social``, DV360 / Criteo / Taboola ... -> ``display``
      (see :data:`AD_PLATFORMS`); an unknown platform is classified from the click's
      campaign as ``<platform> / cpc``;
    * ``call``/``chat`` event types and chat / call-centre sources -> ``call_center`` / ``chat``;
    * ``segment`` -> :func:`web_channel` of campaign, referrer and page URL.
    """
    src = _norm(source)
    etype = _norm(event_type)
    if etype in ("call", "call_started", "call_completed") or src in _CALL_SOURCES:
        return "call_center"
    if etype in ("chat", "chat_started", "chat_message") or src in _CHAT_SOURCES:
        return "chat"
    if src in _WEB_SOURCES:
        return web_channel(campaign, referrer, page_url, rules)
    if src == "shopify":
        return _shopify_channel(sales_channel, campaign, referrer, page_url, rules)
    if src == "ads":
        return _ad_channel(platform, campaign, rules)
    if src in _EMAIL_SOURCES or etype.startswith("email_"):
        return "email"
    if src in _SMS_SOURCES or etype.startswith("sms_"):
        return "sms"
    if src in _PUSH_SOURCES or etype.startswith("push_"):
        return "push"
    if src in _STORE_SOURCES or etype.startswith("store_"):
        return "store"
    if src in _MARKETPLACE_SOURCES or etype.startswith("marketplace_"):
        return "marketplace"
    return UNASSIGNED


def _shopify_channel(
    sales_channel: str | None,
    campaign: Campaign | None,
    referrer: str | None,
    page_url: str | None,
    rules: ChannelRules,
) -> str:
    sc = _norm(sales_channel)
    if sc in SHOPIFY_POS:
        return "store"
    if not sc or sc in SHOPIFY_ONLINE:
        return web_channel(campaign, referrer, page_url, rules)
    if sc in SHOPIFY_UNATTRIBUTED:
        return UNASSIGNED
    return "marketplace"


def _ad_channel(platform: str | None, campaign: Campaign | None, rules: ChannelRules) -> str:
    plat = _norm(platform)
    if campaign is not None and campaign.name and "cross-network" in campaign.name.lower():
        return "cross_network"
    known = AD_PLATFORMS.get(plat)
    if known is not None:
        return known
    medium = campaign.medium if campaign is not None and campaign.medium else "cpc"
    name = campaign.name if campaign is not None else None
    return rules.classify(plat or "(not set)", medium, name)
