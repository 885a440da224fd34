"""Ad clicks, as an ad-platform click export in CSV (one click a row).

The column layout is Journeys' own (close to a Google Ads ``click_view`` report) and is
documented in ``docs/sources.md``; an example is ``tests/fixtures/ads/clicks.csv``.
Columns, by header name (order free, other columns ignored):

=====================  ========  ========================================================
column                 required  meaning
=====================  ========  ========================================================
``click_id``           yes       the platform's click id (GCLID, MSCLKID, FBCLID...)
``click_time``         yes       ISO-8601 (a time without an offset is UTC) or epoch
``platform``           yes       ``google``, ``microsoft``, ``meta``, ``tiktok``,
                                 ``linkedin``, ``dv360``, ``criteo``... (see below)
``click_id_param``     no        the URL parameter of the click id; default per platform
``campaign``           no        campaign name
``ad_group``           no        ad group / ad set
``keyword``            no        search keyword → ``campaign.term``
``ad_id``              no        ad id → ``campaign.content`` unless ``creative`` is set
``creative``           no        creative name → ``campaign.content``
``landing_page_url``   no        final URL; its UTM parameters fill in what is missing
``device``             no        ``desktop``, ``mobile``, ``tablet``... → ``device_type``
``cost``               no        cost of the click (kept in ``properties``)
``currency``           no        currency of the cost
``email``              no        hashed here → ``email_sha256``
``email_sha256``       no        an already hashed address (64 lower-case hex digits)
``device_id``          no        mobile advertising id → ``device_id``
``user_id``            no        the retailer's customer id → ``user_id``
``anonymous_id``       no        the site's anonymous id (passed in a tracking template)
=====================  ========  ========================================================

* Each row is an ``ad_click`` touch; the source event id is ``platform:click_id``.
* The channel comes from the platform (:func:`pipeline.core.source_channels.source_channel`):
  search engines → ``paid_search``, social networks → ``paid_social``, DSPs and
  retargeting → ``display``, YouTube → ``paid_video``...
* ``campaign.click_id`` is ``<param>:<click id>`` (``gclid:abc``), the form the web
  connector gives the same click on the landing page. The click is also an identifier of
  type ``click_id`` with that value, so a stitcher that sees the landing page's click id
  joins the ad click to the visitor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.base import FieldError, email_identifier, opt_float, opt_str, parse_time, req_str
from pipeline.core.channels import campaign_from_url
from pipeline.core.model import Campaign, Identifier, Touchpoint, event_id_for
from pipeline.core.source_channels import source_channel

#: The URL parameter that carries each platform's click id.
CLICK_ID_PARAMS: Mapping[str, str] = {
    **dict.fromkeys(("google", "google_ads", "adwords", "google_search", "sa360"), "gclid"),
    **dict.fromkeys(("youtube", "youtube_ads", "google_shopping", "pmax"), "gclid"),
    **dict.fromkeys(("performance_max", "demand_gen"), "gclid"),
    **dict.fromkeys(("dv360", "display_video_360", "google_display", "gdn"), "dclid"),
    **dict.fromkeys(("microsoft", "microsoft_ads", "bing", "bing_ads"), "msclkid"),
    **dict.fromkeys(("meta", "facebook", "facebook_ads", "instagram"), "fbclid"),
    **dict.fromkeys(("tiktok", "tiktok_ads"), "ttclid"),
    **dict.fromkeys(("linkedin", "linkedin_ads"), "li_fat_id"),
    **dict.fromkeys(("twitter", "x"), "twclid"),
    **dict.fromkeys(("snap", "snapchat"), "sccid"),
    "pinterest": "epik",
    "reddit": "rdt_cid",
    "yandex": "yclid",
}
_DEVICES = {
    "desktop": "desktop",
    "computer": "desktop",
    "computers": "desktop",
    "mobile": "mobile",
    "mobile_devices_with_full_browsers": "mobile",
    "smartphone": "mobile",
    "phone": "mobile",
    "tablet": "tablet",
    "tablets_with_full_browsers": "tablet",
    "connected_tv": "tv",
    "ctv": "tv",
    "tv": "tv",
}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PARAM_RE = re.compile(r"^[a-z0-9_]{1,32}$")


def _norm(value: str) -> str:
    return value.strip().lower().replace(" ", "_").replace("-", "_")


class AdsSource:
    name: str = "ads"
    formats: tuple[str, ...] = ("csv", "jsonl")

    def map(self, record: Mapping[str, Any], received_at: datetime) -> list[Touchpoint]:
        click_id = req_str(record, "click_id", 512).strip()
        occurred = parse_time(record.get("click_time"), "click_time")
        platform_raw = req_str(record, "platform", 64)
        platform = _norm(platform_raw)
        param = opt_str(record, "click_id_param", 32)
        if param is not None:
            param = param.strip().lower()
            if not _PARAM_RE.match(param):
                raise FieldError("click_id_param", f"not a URL parameter name: {param!r:.40}")
        else:
            param = CLICK_ID_PARAMS.get(platform, "click_id")
        click = f"{param}:{click_id}"

        landing = opt_str(record, "landing_page_url", 8192)
        from_url = campaign_from_url(landing) if landing else None
        campaign = Campaign(
            source=platform,
            medium=(from_url.medium if from_url else None) or "cpc",
            name=opt_str(record, "campaign", 256) or (from_url.name if from_url else None),
            content=opt_str(record, "creative", 256)
            or opt_str(record, "ad_id", 256)
            or (from_url.content if from_url else None),
            term=opt_str(record, "keyword", 256) or (from_url.term if from_url else None),
            click_id=click,
        )
        event_type = "ad_click"
        identifiers = [Identifier("click_id", click), *_identifiers(record)]
        properties: dict[str, str] = {"platform": platform_raw.strip()[:64]}
        for field in ("ad_group", "ad_id", "currency"):
            value = opt_str(record, field, 256)
            if value is not None:
                properties[field] = value
        cost = opt_float(record, "cost")
        if cost is not None:
            properties["cost"] = f"{cost:g}"
        if landing:
            properties["landing_page_url"] = landing[:2048]
        device = opt_str(record, "device", 64)
        source_event_id = f"{platform}:{click_id}"
        return [
            Touchpoint(
                event_id=event_id_for(self.name, source_event_id),
                source=self.name,
                source_event_id=source_event_id,
                occurred_at=occurred,
                received_at=received_at,
                channel=source_channel(self.name, event_type, campaign=campaign, platform=platform),
                event_type=event_type,
                identifiers=tuple(dict.fromkeys(identifiers)),
                campaign=campaign,
                device_type=_DEVICES.get(_norm(device), "other") if device else None,
                properties=properties,
            )
        ]


def _identifiers(record: Mapping[str, Any]) -> list[Identifier]:
    out: list[Identifier] = []
    email = email_identifier(record, "email")
    if email is not None:
        out.append(email)
    hashed = opt_str(record, "email_sha256", 64)
    if hashed is not None:
        hashed = hashed.strip().lower()
        if not _SHA256_RE.match(hashed):
            raise FieldError("email_sha256", "expected 64 hexadecimal digits")
        out.append(Identifier("email_sha256", hashed))
    for field in ("device_id", "user_id", "anonymous_id"):
        value = opt_str(record, field, 256)
        if value is not None:
            out.append(Identifier(field, value.strip()))
    return out
