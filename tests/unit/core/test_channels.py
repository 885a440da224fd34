"""Channel grouping: GA4's default channel group rules, click ids, referrers, sources."""

from __future__ import annotations

import pytest

from pipeline.core.channels import (
    CHANNELS,
    DEFAULT,
    ChannelRules,
    ChannelRulesError,
    campaign_from_url,
    host_of,
    session_source,
    web_channel,
)
from pipeline.core.model import Campaign
from pipeline.core.source_channels import source_channel

PAGE = "https://www.shop.example/products/42"


def c(source: str | None = None, medium: str | None = None, name: str | None = None) -> Campaign:
    return Campaign(source=source, medium=medium, name=name)


# (id, campaign, referrer, page_url, expected channel)
GA4_CASES: list[tuple[str, Campaign | None, str | None, str | None, str]] = [
    ("no referrer", None, None, PAGE, "direct"),
    ("explicit direct", c("(direct)", "(none)"), None, PAGE, "direct"),
    ("google organic", None, "https://www.google.com/", PAGE, "organic_search"),
    ("google country domain", None, "https://www.google.co.uk/search?q=x", PAGE, "organic_search"),
    ("bing organic", None, "https://www.bing.com/search?q=shoes", PAGE, "organic_search"),
    ("duckduckgo", None, "https://duckduckgo.com/", PAGE, "organic_search"),
    ("yahoo japan", None, "https://search.yahoo.co.jp/search?p=x", PAGE, "organic_search"),
    ("utm organic medium", c("newsletter-partner", "organic"), None, PAGE, "organic_search"),
    (
        "android google app",
        None,
        "android-app://com.google.android.googlequicksearchbox/",
        PAGE,
        "organic_search",
    ),
    ("gclid", None, None, PAGE + "?gclid=Cj0KCQ", "paid_search"),
    ("gbraid", None, None, PAGE + "?gbraid=0AAAA", "paid_search"),
    ("utm google cpc", c("google", "cpc"), None, PAGE, "paid_search"),
    ("utm bing ppc", c("bing", "ppc"), None, PAGE, "paid_search"),
    ("msclkid", None, None, PAGE + "?msclkid=abc", "paid_search"),
    (
        "gclid beats utm (auto-tagging)",
        None,
        None,
        PAGE + "?utm_medium=email&gclid=x",
        "paid_search",
    ),
    ("utm beats msclkid", None, None, PAGE + "?utm_source=nl&utm_medium=email&msclkid=x", "email"),
    ("facebook referral", None, "https://www.facebook.com/", PAGE, "organic_social"),
    ("l.facebook.com", None, "https://l.facebook.com/l.php?u=x", PAGE, "organic_social"),
    ("m.facebook.com", None, "https://m.facebook.com/", PAGE, "organic_social"),
    ("t.co", None, "https://t.co/AbC", PAGE, "organic_social"),
    ("lnkd.in", None, "https://lnkd.in/xyz", PAGE, "organic_social"),
    ("reddit", None, "https://out.reddit.com/t3_x", PAGE, "organic_social"),
    ("pinterest uk", None, "https://www.pinterest.co.uk/pin/1", PAGE, "organic_social"),
    ("fbclid is organic social", None, None, PAGE + "?fbclid=IwAR0", "organic_social"),
    ("utm social medium", c("newsletter", "social"), None, PAGE, "organic_social"),
    ("ttclid", None, None, PAGE + "?ttclid=E.C.P", "paid_social"),
    ("li_fat_id", None, None, PAGE + "?li_fat_id=1", "paid_social"),
    ("utm facebook paid_social", c("facebook", "paid_social"), None, PAGE, "paid_social"),
    ("utm ig cpc", c("ig", "cpc"), None, PAGE, "paid_social"),
    ("utm email", c("newsletter", "email"), None, PAGE, "email"),
    ("utm e-mail mixed case", c("Newsletter", "E-Mail"), None, PAGE, "email"),
    ("utm source email", c("email", "weekly"), None, PAGE, "email"),
    ("gmail web", None, "https://mail.google.com/", PAGE, "email"),
    ("utm sms", c("attentive", "sms"), None, PAGE, "sms"),
    ("utm source sms", c("sms", None), None, PAGE, "sms"),
    ("push medium", c("braze", "push"), None, PAGE, "push"),
    ("web-push medium", c("onesignal", "web-push"), None, PAGE, "push"),
    ("mobile notification", c("app", "mobile_notification"), None, PAGE, "push"),
    ("firebase source", c("firebase", None), None, PAGE, "push"),
    ("affiliate", c("partnerco", "affiliate"), None, PAGE, "affiliate"),
    ("display", c("adnetwork", "display"), None, PAGE, "display"),
    ("banner", c("adnetwork", "banner"), None, PAGE, "display"),
    ("cpm on unknown source", c("adnetwork", "cpm"), None, PAGE, "display"),
    ("cpm on google is paid search (GA4 order)", c("google", "cpm"), None, PAGE, "paid_search"),
    ("dclid", None, None, PAGE + "?dclid=CJX", "display"),
    ("paid other", c("adnetwork", "paid"), None, PAGE, "paid_other"),
    ("retargeting", c("adnetwork", "retargeting"), None, PAGE, "paid_other"),
    ("youtube organic video", None, "https://m.youtube.com/watch?v=1", PAGE, "organic_video"),
    ("youtu.be is not on the list", None, "https://youtu.be/abc", PAGE, "referral"),
    ("utm video medium", c("partner", "video"), None, PAGE, "organic_video"),
    ("youtube cpc", c("youtube", "cpc"), None, PAGE, "paid_video"),
    ("amazon shopping", None, "https://www.amazon.com/", PAGE, "organic_shopping"),
    ("ebay germany", None, "https://www.ebay.de/itm/1", PAGE, "organic_shopping"),
    ("shopping campaign cpc", c("google", "cpc", "summer-shopping"), None, PAGE, "paid_shopping"),
    (
        "shop campaign organic",
        c("partner", "weekly", "Spring Shop"),
        None,
        PAGE,
        "organic_shopping",
    ),
    ("amazon cpc", c("amazon", "cpc"), None, PAGE, "paid_shopping"),
    ("cross-network", c("google", "cpc", "pmax_cross-network_q3"), None, PAGE, "cross_network"),
    ("audio", c("spotify", "audio"), None, PAGE, "audio"),
    ("self-referral", None, "https://www.shop.example/cart", PAGE, "direct"),
    ("self-referral subdomain", None, "https://blog.shop.example/post", PAGE, "direct"),
    ("other site referral", None, "https://blog.example.org/best-shoes", PAGE, "referral"),
    ("utm referral medium", c("partner.com", "referral"), None, PAGE, "referral"),
    ("chatgpt is referral", None, "https://chatgpt.com/", PAGE, "referral"),
    ("unknown utm", c("foo", "bar"), None, PAGE, "unassigned"),
    (
        "utm from page url",
        None,
        "https://www.google.com/",
        PAGE + "?utm_source=newsletter&utm_medium=email",
        "email",
    ),
]


@pytest.mark.parametrize(
    ("campaign", "referrer", "page_url", "expected"),
    [case[1:] for case in GA4_CASES],
    ids=[case[0] for case in GA4_CASES],
)
def test_ga4_default_channel_group(
    campaign: Campaign | None, referrer: str | None, page_url: str | None, expected: str
) -> None:
    assert expected in CHANNELS
    assert web_channel(campaign, referrer, page_url) == expected


def test_table_is_large_enough() -> None:
    assert len(GA4_CASES) >= 30
    covered = {case[-1] for case in GA4_CASES}
    web = set(CHANNELS) - {"store", "marketplace", "call_center", "chat"}
    assert web <= covered


def test_campaign_from_url_parses_utm_and_tags_click_id() -> None:
    camp = campaign_from_url(
        "https://shop.example/?utm_source=Google&utm_medium=cpc&utm_campaign=Brand"
        "&utm_term=red+shoes&utm_content=ad1&GCLID=abc"
    )
    assert camp == Campaign(
        source="Google",
        medium="cpc",
        name="Brand",
        content="ad1",
        term="red shoes",
        click_id="gclid:abc",
    )
    assert campaign_from_url("https://shop.example/p?color=red") is None
    assert campaign_from_url("https://shop.example/p") is None
    assert campaign_from_url(None) is None
    assert campaign_from_url("https://[::1/?utm_source=x") is None


def test_untagged_click_id_is_ignored() -> None:
    # A click id without its "param:" prefix gives no source; the referrer decides.
    camp = Campaign(click_id="Cj0KCQ")
    assert web_channel(camp, "https://www.bing.com/", PAGE) == "organic_search"
    assert web_channel(Campaign(click_id="gclid:Cj0KCQ"), None, PAGE) == "paid_search"


def test_session_source_matches_ga4_source_medium() -> None:
    # An unlisted search host takes the list entry it falls under, as GA4 reports it.
    assert session_source(None, "https://www.google.de/", PAGE) == ("google", "organic", None)
    facebook = ("m.facebook.com", "referral", None)
    assert session_source(None, "https://m.facebook.com/", PAGE) == facebook
    assert session_source(None, "https://news.site/a", PAGE) == ("news.site", "referral", None)
    assert session_source(None, None, PAGE) == ("(direct)", "(none)", None)
    assert session_source(c("google", None, "x"), None, PAGE) == ("google", "(not set)", "x")


def test_host_of() -> None:
    assert host_of("https://WWW.Google.com:443/x") == "www.google.com"
    assert host_of("google.com/search") == "google.com"
    assert host_of("") is None
    assert host_of(None) is None


def test_source_category_specific_entry_wins() -> None:
    assert DEFAULT.source_category("mail.google.com") == "email"
    assert DEFAULT.source_category("www.google.com.br") == "search"
    assert DEFAULT.source_category("groups.google.com") == "social"  # listed: no fallback
    assert DEFAULT.source_category("www.baidu.com") == "search"  # unlisted domain: baidu
    assert DEFAULT.source_category("tieba.baidu.com") is None  # unlisted subdomain
    assert DEFAULT.source_category("google.mysite.com") is None
    assert DEFAULT.source_category("ask.fm") == "social"


def test_rules_from_dict_extend_replace_and_errors() -> None:
    rules = ChannelRules.from_dict(
        {
            "search_sources": {"add": ["perplexity.ai"]},
            "ignored_referrers": ["paypal.com"],
            "click_ids": {"fbclid": ["facebook", "paid_social"], "ttclid": False},
            "affiliate_mediums": {"add": ["partner"]},
        }
    )
    assert web_channel(None, "https://www.perplexity.ai/", PAGE, rules) == "organic_search"
    assert web_channel(None, "https://www.perplexity.ai/", PAGE) == "referral"
    assert web_channel(None, "https://www.paypal.com/checkout", PAGE, rules) == "direct"
    assert web_channel(None, None, PAGE + "?fbclid=1", rules) == "paid_social"
    assert web_channel(None, None, PAGE + "?ttclid=1", rules) == "direct"
    assert web_channel(c("x", "partner"), None, PAGE, rules) == "affiliate"
    assert ChannelRules.from_dict(rules.to_dict()) == rules
    with pytest.raises(ChannelRulesError, match="serch_sources"):
        ChannelRules.from_dict({"serch_sources": ["x"]})
    with pytest.raises(ChannelRulesError, match="paid_medium_regex"):
        ChannelRules.from_dict({"paid_medium_regex": "("})
    with pytest.raises(ChannelRulesError, match="display_mediums"):
        ChannelRules.from_dict({"display_mediums": "banner"})


@pytest.mark.parametrize(
    ("source", "event_type", "hints", "expected"),
    [
        ("sendgrid", "email_click", {}, "email"),
        ("sendgrid", "email_open", {}, "email"),
        ("twilio", "sms_click", {}, "sms"),
        ("twilio", "call", {}, "call_center"),
        ("push", "push_open", {}, "push"),
        ("pos", "store_purchase", {}, "store"),
        ("shopify", "purchase", {"sales_channel": "pos"}, "store"),
        ("shopify", "purchase", {"sales_channel": "amazon"}, "marketplace"),
        ("shopify", "purchase", {"sales_channel": "ebay"}, "marketplace"),
        ("shopify", "purchase", {"sales_channel": "shopify_draft_order"}, "unassigned"),
        (
            "shopify",
            "purchase",
            {"sales_channel": "web", "referrer": "https://www.google.com/"},
            "organic_search",
        ),
        (
            "shopify",
            "purchase",
            {"sales_channel": "web", "page_url": PAGE + "?gclid=1"},
            "paid_search",
        ),
        ("ads", "ad_click", {"platform": "google"}, "paid_search"),
        ("ads", "ad_click", {"platform": "Bing"}, "paid_search"),
        ("ads", "ad_click", {"platform": "meta"}, "paid_social"),
        ("ads", "ad_click", {"platform": "facebook"}, "paid_social"),
        ("ads", "ad_click", {"platform": "instagram"}, "paid_social"),
        ("ads", "ad_click", {"platform": "tiktok"}, "paid_social"),
        ("ads", "ad_click", {"platform": "linkedin"}, "paid_social"),
        ("ads", "ad_click", {"platform": "pinterest"}, "paid_social"),
        ("ads", "ad_click", {"platform": "snap"}, "paid_social"),
        ("ads", "ad_click", {"platform": "dv360"}, "display"),
        ("ads", "ad_click", {"platform": "criteo"}, "display"),
        ("ads", "ad_click", {"platform": "youtube"}, "paid_video"),
        ("ads", "ad_click", {"platform": "acme-network"}, "paid_other"),
        (
            "ads",
            "ad_click",
            {"platform": "google", "campaign": c(name="PMax cross-network")},
            "cross_network",
        ),
        ("intercom", "chat", {}, "chat"),
        ("segment", "chat_started", {}, "chat"),
        ("call_center", "call", {}, "call_center"),
        ("segment", "page_view", {"referrer": "https://t.co/x"}, "organic_social"),
        ("segment", "store_locator_viewed", {}, "direct"),
        ("mystery", "thing", {}, "unassigned"),
    ],
)
def test_source_channel(source: str, event_type: str, hints: dict, expected: str) -> None:
    assert source_channel(source, event_type, **hints) == expected
