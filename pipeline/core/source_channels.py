"""The channel of an event from a non-web source: SendGrid, Twilio, point of sale, Shopify
sales channels, ad-click exports, chat and call centre (Segment web and app events go
through :func:`pipeline.core.channels.web_channel`, GA4's rules); described in
``docs/journeys.md``."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from types import MappingProxyType

from pipeline.core.channels import (
    UNASSIGNED,
    ChannelRules,
    active_rules,
    read_data,
    web_channel,
)
from pipeline.core.model import Campaign

#: Ad platforms of the ad-click export, by the channel of their clicks (data file).
AD_PLATFORMS: Mapping[str, str] = MappingProxyType(
    {
        platform: channel
        for channel, platforms in tomllib.loads(read_data("ad_platforms.toml")).items()
        for platform in platforms
    }
)

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
    rules: ChannelRules | None = None,
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
    rules = rules or active_rules()
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
