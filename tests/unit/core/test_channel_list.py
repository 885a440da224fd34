"""GA4's source-category list as data: every entry, a hand-checked table, each deviation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.core.channels import (
    ADDITION_REASONS,
    DEFAULT,
    GA4_SOURCE_CATEGORIES,
    GOOGLE_LIST_FILE,
    JOURNEYS_SOURCE_ADDITIONS,
    ChannelRules,
    ChannelRulesError,
    parse_additions,
    parse_source_list,
    session_source,
    web_channel,
)
from pipeline.core.model import Campaign

PAGE = "https://www.shop.example/products/42"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "journeys.md"
_HOST = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")


def test_shipped_list_is_googles_819_sources() -> None:
    counts: dict[str, int] = {}
    for category in GA4_SOURCE_CATEGORIES.values():
        counts[category] = counts.get(category, 0) + 1
    assert counts == {"search": 129, "shopping": 52, "social": 592, "video": 46}


def test_every_list_entry_gets_its_listed_category() -> None:
    wrong = []
    for source, category in GA4_SOURCE_CATEGORIES.items():
        got = (
            DEFAULT.source_category(source),
            DEFAULT.classify(source, "referral", None),
            DEFAULT.classify(source, "cpc", None),
        )
        if got != (category, f"organic_{category}", f"paid_{category}"):
            wrong.append((source, category, got))
    assert wrong == []


def test_every_listed_host_as_referrer_gets_its_listed_category() -> None:
    hosts = [(s, c) for s, c in GA4_SOURCE_CATEGORIES.items() if _HOST.match(s)]
    assert len(hosts) > 400
    wrong = [
        (host, category)
        for host, category in hosts
        if web_channel(None, f"https://{host}/some/page", PAGE) != f"organic_{category}"
    ]
    assert wrong == []


# Checked by hand against Google's published rules ("[GA4] Default channel group",
# support.google.com/analytics/answer/9756891) and the list as shipped.
# (source, medium, campaign, expected channel)
HAND_CHECKED: list[tuple[str, str, str, str]] = [
    ("(direct)", "(none)", "", "direct"),
    ("(direct)", "(not set)", "", "direct"),
    ("whatsapp", "(none)", "", "organic_social"),
    ("google-play", "cpc", "", "paid_search"),
    ("groups.google.com", "referral", "", "organic_social"),
    ("Facebook", "CPC", "", "paid_social"),
    ("answers.yahoo.com", "referral", "", "organic_social"),
    ("blog.naver.com", "referral", "", "organic_social"),
    ("shopping.yahoo.co.jp", "referral", "", "organic_shopping"),
    ("rakuten", "cpc", "", "paid_search"),
    ("rakuten.co.jp", "referral", "", "organic_search"),
    ("mail.yandex.ru", "referral", "", "organic_search"),
    ("google", "cpc", "pmax cross-network", "cross_network"),
    ("youtube", "cpc", "brand_cross-network", "cross_network"),
    ("google", "cpc", "", "paid_search"),
    ("google", "cpm", "", "paid_search"),
    ("bing", "ppc", "", "paid_search"),
    ("yahoo", "retargeting", "", "paid_search"),
    ("naver", "cpc", "", "paid_search"),
    ("bing.com", "cpc", "", "paid_other"),
    ("amazon", "cpc", "", "paid_shopping"),
    ("Google Shopping", "cpc", "", "paid_shopping"),
    ("pinterest", "cpc", "holiday shopping", "paid_shopping"),
    ("partner", "cpc", "spring_shopping", "paid_shopping"),
    ("tiktok", "paid_social", "", "paid_social"),
    ("IG", "Paid_Social", "", "paid_social"),
    ("linkedin", "cpc", "", "paid_social"),
    ("youtube.com", "paid", "", "paid_video"),
    ("adnetwork", "display", "", "display"),
    ("adnetwork", "cpm", "", "display"),
    ("adnetwork", "banner", "", "display"),
    ("adnetwork", "paid", "", "paid_other"),
    ("ebay.com", "referral", "", "organic_shopping"),
    ("partner", "referral", "summer-shop", "organic_shopping"),
    ("t.co", "referral", "", "organic_social"),
    ("m.facebook.com", "referral", "", "organic_social"),
    ("partner", "social", "", "organic_social"),
    ("youtube", "referral", "", "organic_video"),
    ("partner", "video", "", "organic_video"),
    ("baidu", "organic", "", "organic_search"),
    ("duckduckgo", "referral", "", "organic_search"),
    ("ecosia.org", "referral", "", "organic_search"),
    ("newsletter-partner", "organic", "", "organic_search"),
    ("ecosia", "referral", "", "referral"),
    ("blog.example.org", "referral", "", "referral"),
    ("partner", "link", "", "referral"),
    ("chatgpt.com", "referral", "", "referral"),
    ("newsletter", "email", "", "email"),
    ("email", "newsletter", "", "email"),
    ("mailchimp", "E-Mail", "", "email"),
    ("partner", "affiliate", "", "affiliate"),
    ("spotify", "audio", "", "audio"),
    ("attentive", "sms", "", "sms"),
    ("sms", "text", "", "sms"),
    ("braze", "push", "", "push"),
    ("onesignal", "web-push", "", "push"),
    ("app", "mobile_notification", "", "push"),
    ("firebase", "(not set)", "", "push"),
    ("foo", "bar", "", "unassigned"),
]


@pytest.mark.parametrize(("source", "medium", "campaign", "expected"), HAND_CHECKED)
def test_hand_checked_source_medium_campaign(
    source: str, medium: str, campaign: str, expected: str
) -> None:
    assert DEFAULT.classify(source, medium, campaign) == expected


def test_hand_checked_table_is_large_and_has_the_issue_rows() -> None:
    assert len(HAND_CHECKED) >= 40
    pairs = {(s, m) for s, m, _, _ in HAND_CHECKED}
    needed = {("whatsapp", "(none)"), ("google-play", "cpc"), ("groups.google.com", "referral")}
    assert needed | {("Facebook", "CPC")} <= pairs


# -- Journeys' deviations from GA4: one test each, named in docs/journeys.md ----------


def test_deviation_additions_are_not_on_googles_list() -> None:
    assert len(JOURNEYS_SOURCE_ADDITIONS) <= 30
    assert not set(JOURNEYS_SOURCE_ADDITIONS) & set(GA4_SOURCE_CATEGORIES)
    for source, category in JOURNEYS_SOURCE_ADDITIONS.items():
        assert DEFAULT.source_category(source) == category
        assert ADDITION_REASONS[source]


def test_deviation_x_threads_bluesky_are_social() -> None:
    for host in ("x.com", "threads.net", "bsky.app"):
        assert web_channel(None, f"https://{host}/post/1", PAGE) == "organic_social"
    assert DEFAULT.classify("x.com", "cpc", None) == "paid_social"


def test_deviation_newer_search_engines_are_search() -> None:
    for host in ("search.brave.com", "kagi.com", "www.startpage.com"):
        assert web_channel(None, f"https://{host}/search?q=shoes", PAGE) == "organic_search"


def test_deviation_webmail_referrer_is_email() -> None:
    assert session_source(None, "https://mail.google.com/mail/u/0/", PAGE)[1] == "email"
    assert web_channel(None, "https://outlook.live.com/mail/0/", PAGE) == "email"
    assert web_channel(None, "android-app://com.google.android.gm/", PAGE) == "email"


def test_deviation_android_app_referrers() -> None:
    app = "android-app://{}/"
    assert web_channel(None, app.format("com.google.android.googlequicksearchbox"), PAGE) == (
        "organic_search"
    )
    assert web_channel(None, app.format("com.instagram.android"), PAGE) == "organic_social"
    assert web_channel(None, app.format("com.google.android.youtube"), PAGE) == "organic_video"


def test_deviation_ask_fm_is_social() -> None:
    assert web_channel(None, "https://ask.fm/someone", PAGE) == "organic_social"


def test_deviation_other_platforms_click_ids() -> None:
    assert web_channel(None, None, PAGE + "?msclkid=1") == "paid_search"
    assert web_channel(None, None, PAGE + "?ttclid=1") == "paid_social"
    assert web_channel(None, None, PAGE + "?fbclid=1") == "organic_social"
    assert web_channel(None, None, PAGE + "?irclickid=1") == "affiliate"
    assert web_channel(None, None, PAGE + "?_kx=1") == "email"
    # UTM parameters win over them (unlike Google's gclid).
    assert web_channel(None, None, PAGE + "?utm_source=nl&utm_medium=email&msclkid=1") == "email"


def test_deviation_unlisted_referrer_host_falls_back() -> None:
    # Hosts not on the list take their nearest listed parent domain, then their
    # registrable name; a listed host never does (groups.google.com stays social).
    assert session_source(None, "https://www.google.co.uk/", PAGE)[:2] == ("google", "organic")
    assert web_channel(None, "https://de-de.facebook.com/", PAGE) == "organic_social"
    assert web_channel(None, "https://www.ebay.de/itm/1", PAGE) == "organic_shopping"
    assert web_channel(None, "https://groups.google.com/g/x", PAGE) == "organic_social"
    # A UTM source is matched exactly, as GA4 does.
    assert web_channel(Campaign(source="google.co.uk", medium="cpc"), None, PAGE) == "paid_other"


def test_deviation_self_referral_is_direct() -> None:
    assert web_channel(None, "https://blog.shop.example/post", PAGE) == "direct"


def test_deviation_ai_assistants_stay_referral() -> None:
    for host in ("chatgpt.com", "gemini.google.com", "claude.ai", "perplexity.ai"):
        assert web_channel(None, f"https://{host}/", PAGE) == "referral"


def test_docs_deviation_list_names_existing_tests() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Where Journeys differs from GA4", 1)[1].split("\n### ", 1)[0]
    named = re.findall(r"`(test_deviation_\w+)`", section)
    defined = {name for name in globals() if name.startswith("test_deviation_")}
    assert named and set(named) == defined


# -- the data files and their overrides ---------------------------------------------


def test_source_list_parser_names_file_and_line() -> None:
    text = "# comment\nsource,source_category\nfoo,SOURCE_CATEGORY_SOCIAL\nBar.com,search\n"
    assert parse_source_list(text, "x.csv") == {"foo": "social", "bar.com": "search"}
    with pytest.raises(ChannelRulesError, match=r"x\.csv:2: foo: unknown category 'SOURCE_X'"):
        parse_source_list("# c\nfoo,SOURCE_X\n", "x.csv")
    with pytest.raises(ChannelRulesError, match=r"x\.csv:2: foo is listed twice"):
        parse_source_list("foo,social\nfoo,search\n", "x.csv")
    with pytest.raises(ChannelRulesError, match=r"x\.csv:1: expected"):
        parse_source_list("justone\n", "x.csv")
    assert GOOGLE_LIST_FILE.endswith(".csv")


def test_additions_parser_errors_name_the_table() -> None:
    with pytest.raises(ChannelRulesError, match=r"a\.toml: sources\[0\]"):
        parse_additions('[[sources]]\ncategory = "serch"\nreason = "r"\nnames = ["x"]\n', "a.toml")
    with pytest.raises(ChannelRulesError, match=r"a\.toml: click_ids\[0\]"):
        parse_additions('[[click_ids]]\nreason = "r"\nids = [["p", "s"]]\n', "a.toml")


def test_sources_override_moves_single_entries() -> None:
    rules = ChannelRules.from_dict(
        {"sources": {"chatgpt.com": "search", "Groups.Google.com": "none", "x.com": "none"}}
    )
    assert rules.classify("chatgpt.com", "referral", None) == "organic_search"
    assert web_channel(None, "https://chatgpt.com/", PAGE, rules) == "organic_search"
    assert rules.classify("groups.google.com", "referral", None) == "referral"
    assert rules.classify("x.com", "referral", None) == "referral"
    assert rules.classify("whatsapp", "(none)", None) == "organic_social"  # others unchanged
    assert ChannelRules.from_dict(rules.to_dict()) == rules
    with pytest.raises(ChannelRulesError, match=r'sources\."foo\.com": expected one of'):
        ChannelRules.from_dict({"sources": {"foo.com": "serch"}})
    with pytest.raises(ChannelRulesError, match="sources: expected a table"):
        ChannelRules.from_dict({"sources": ["foo.com"]})
