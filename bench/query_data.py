"""A year of analysts' data, generated inside ClickHouse with the project's own schema.

``make bench-queries`` times the analyst queries on this set. Everything is computed
from ``numbers()`` with hashes, so the same size gives the same rows, and nothing passes
through Python. At the default 10M touchpoints it holds about 1.67M journeys (12%
converted, 5% of those with a superseded version that credited one touch more), 4.8M
attribution rows, 2.75M identities and 3% redelivered touchpoints (the older copy still
under the person a merge absorbed). Touchpoints come in slots of six per journey: the
journey's touches, then e-mail/SMS deliveries and opens or web page views, then the
conversion (an online order, 20% of them collected in a store, or a store purchase)
when the journey converts.
"""

from __future__ import annotations

from collections.abc import Callable

#: 17 channels; the index into this array is ``1 + hash % 17``.
CHANNELS = (
    "paid_search", "organic_search", "paid_social", "organic_social", "display",
    "referral", "direct", "affiliate", "video", "email", "sms", "push", "app",
    "store", "call_centre", "chat", "marketplace",
)  # fmt: skip
START = "2025-01-01 00:00:00"
DAYS = 365
SLOTS = 6


def _arr(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _h(expr: str, salt: int) -> str:
    return f"cityHash64({expr}, {salt})"


def journey_exprs(j: str) -> dict[str, str]:
    """SQL of the generated journey *j* (a UInt64 expression): touches, conversion, times."""
    return {
        "tc": f"toUInt64(1 + {_h(j, 1)} % 5)",
        "converted": f"toUInt8({_h(j, 2)} % 1000 < 120)",
        "start": f"toDateTime64('{START}', 3, 'UTC') + toIntervalSecond("
        f"{_h(j, 3)} % {(DAYS - 12) * 86400})",
        "gap": f"toUInt64(600 + {_h(j, 4)} % 172800)",
        "superseded": f"({_h(j, 7)} % 100 < 5)",
        "person": f"concat('p', toString({j} % {{persons}}))",
        "journey_id": f"toString(reinterpretAsUUID(MD5(concat('j', toString({j})))))",
    }


def event_id(n: str) -> str:
    return f"toString(reinterpretAsUUID(MD5(concat('e', toString({n})))))"


def channel(n: str) -> str:
    return f"{_arr(CHANNELS)}[1 + {_h(n, 5)} % 17]"


def touchpoints_sql(db: str, first: int, count: int, persons: int, copy: int = 2) -> str:
    """``INSERT`` of touchpoints ``first .. first+count``; with *copy* 1, of the 3% of them
    that were delivered twice: the older copy, half of them still under the person that a
    merge absorbed (a separate insert, as on a redelivery: one insert block would be
    deduplicated on insert)."""
    j = journey_exprs("j")
    person = j["person"].format(persons=persons)
    ch = channel("n")
    web = "('paid_search','organic_search','paid_social','organic_social','display',"
    web += "'referral','direct','affiliate','video','app','push')"
    touch = "slot < tc"
    conv = "slot = 5 AND converted"
    online = f"({_h('n', 11)} % 100 < 65)"
    pickup = f"({_h('n', 12)} % 100 < 20)"
    return f"""
INSERT INTO {db}.touchpoints
SELECT
    {event_id("n")} AS event_id,
    multiIf({touch}, multiIf(ch IN {web}, 'segment', ch = 'email', 'sendgrid', ch = 'sms',
            'twilio', ch = 'store', 'pos', ch = 'marketplace', 'shopify', 'interactions'),
            {conv}, if({online}, 'shopify', 'pos'),
            {_h("n", 6)} % 4 = 0, 'sendgrid', {_h("n", 6)} % 4 = 1, 'twilio', 'segment')
        AS source,
    toString(n) AS source_event_id,
    if(copy = 1 AND {_h("n", 10)} % 2 = 0, concat('q', substring(person, 2)), person)
        AS person_id,
    multiIf({touch}, ch, {conv}, if({online}, ch, 'store'),
            source = 'sendgrid', 'email', source = 'twilio', 'sms', 'direct') AS channel,
    multiIf({touch}, multiIf(ch = 'email', 'email_click', ch = 'sms', 'sms_click',
            ch = 'store', 'store_visit', ch = 'app', 'screen', ch = 'push', 'push_open',
            ch IN ('call_centre', 'chat'), ch, ch = 'marketplace', 'marketplace_visit',
            'page'),
            {conv}, if({online}, 'purchase', 'store_purchase'),
            source = 'sendgrid', if({_h("n", 8)} % 3 = 0, 'email_open', 'email_delivered'),
            source = 'twilio', 'sms_delivered', 'product_viewed') AS event_type,
    start + toIntervalSecond(slot * gap) AS occurred_at,
    occurred_at + toIntervalSecond(2) AS received_at,
    ['anonymous_id'] AS identifier_types,
    [concat('a', substring(person, 2))] AS identifier_values,
    '' AS campaign_source, '' AS campaign_medium, '' AS campaign_name,
    '' AS campaign_content, '' AS campaign_term, '' AS click_id, '' AS referrer,
    if(source IN ('segment', 'shopify') AND event_type NOT IN ('purchase') OR
       (event_type = 'purchase' AND {_h("n", 13)} % 2 = 0),
       ['desktop', 'mobile', 'tablet'][1 + {_h("n", 14)} % 3], '') AS device_type,
    if(source = 'pos' OR (event_type = 'purchase' AND {pickup}),
       concat('store-', toString({_h("n", 15)} % 40)), '') AS store_id,
    if({conv}, concat('o', toString(n)), '') AS order_id,
    if({conv}, 20 + {_h("n", 16)} % 20000 / 100, 0) AS revenue,
    if({conv}, 'EUR', '') AS currency,
    if(event_type = 'purchase',
       map('sales_channel', 'online', 'fulfillment', if({pickup}, 'pickup', 'shipping')),
       map()) AS properties,
    false AS is_bot,
    map() AS consent,
    toUInt32(n % 12) AS kafka_partition,
    n AS kafka_offset,
    received_at + toIntervalSecond(copy * 60) AS ingested_at
FROM
(
    SELECT n, n DIV {SLOTS} AS j, n % {SLOTS} AS slot, copy, {ch} AS ch,
           {j["tc"]} AS tc, {j["converted"]} AS converted, {j["start"]} AS start,
           {j["gap"]} AS gap, {person} AS person
    FROM (SELECT {first} + number AS n, toUInt8({copy}) AS copy FROM numbers({count}))
    WHERE copy = 2 OR {_h("n", 9)} % 100 < 3
)
"""


#: The Join table of each touchpoint's source, device and type that :func:`generate` builds
#: so that journeys carry them as the journey stage writes them (migration 0013).
FACTS = "bench_touch_facts"


def journeys_sql(
    db: str, first: int, count: int, persons: int, old: bool = False, facts: bool = True
) -> str:
    """``INSERT`` of journeys ``first .. first+count``, or with *old* of the superseded
    first versions of 5% of the converted ones (one touch more, which the new version
    drops: its credit rows must leave attribution_current). With *facts*, each touch's
    source and device and the conversion's type and device, looked up in :data:`FACTS`
    (without, the columns a schema before 0013 has)."""
    j = journey_exprs("j")
    ids = f"arrayMap(i -> {event_id('j * 6 + i')}, range(k))"
    chans = f"arrayMap(i -> {channel('j * 6 + i')}, range(k))"
    times = "arrayMap(i -> start + toIntervalSecond(i * gap), range(k))"
    get = f"joinGet('{db}.{FACTS}', '{{}}', {{}})"
    described = (
        ", touch_sources, touch_devices, conversion_event_type, conversion_device" if facts else ""
    )
    values = (
        f""",
    arrayMap(id -> {get.format("source", "id")}, touch_event_ids) AS touch_sources,
    arrayMap(id -> {get.format("device", "id")}, touch_event_ids) AS touch_devices,
    {get.format("event_type", "conversion_event_id")} AS conversion_event_type,
    {get.format("device", "conversion_event_id")} AS conversion_device"""
        if facts
        else ""
    )
    return f"""
INSERT INTO {db}.journeys (journey_id, person_id, started_at, ended_at, converted,
    conversion_event_id, revenue, path, touch_event_ids, touch_times, touch_count, hops,
    days_to_convert, version{described})
SELECT
    {j["journey_id"]} AS journey_id,
    {j["person"].format(persons=persons)} AS person_id,
    start AS started_at,
    if(converted, start + toIntervalSecond(5 * gap), start + toIntervalSecond((tc - 1) * gap))
        AS ended_at,
    converted,
    if(converted, {event_id("j * 6 + 5")}, '') AS conversion_event_id,
    if(converted, 20 + {_h("j * 6 + 5", 16)} % 20000 / 100, 0) AS revenue,
    {chans} AS path,
    {ids} AS touch_event_ids,
    {times} AS touch_times,
    toUInt32(k) AS touch_count,
    toUInt32(arraySum(arrayMap((a, b) -> a != b, arrayPopBack(path), arrayPopFront(path))))
        AS hops,
    if(converted, dateDiff('second', started_at, ended_at) / 86400, 0) AS days_to_convert,
    version{values}
FROM
(
    SELECT j, tc, converted, start, gap, version,
           toUInt64(if(version = 1 AND superseded, least(tc + 1, 5), tc)) AS k
    FROM
    (
        SELECT j, {j["tc"]} AS tc, {j["converted"]} AS converted, {j["start"]} AS start,
               {j["gap"]} AS gap, converted AND {j["superseded"]} AS superseded
        FROM (SELECT {first} + number AS j FROM numbers({count}))
    )
    ARRAY JOIN [if(superseded, {1 if old else 2}, 1)] AS version
    WHERE {"superseded" if old else "1"}
)
"""


#: Credit of touch position ``p`` (1-based) of ``k`` touches, by model.
CREDITS = {
    "first_touch": "if(p = 1, 1., 0.)",
    "last_touch": "if(p = k, 1., 0.)",
    "last_non_direct": "if(p = k, 1., 0.)",
    "linear": "1 / k",
    "time_decay": "pow(2, p) / (pow(2, k + 1) - 2)",
    "position_based": "multiIf(k = 1, 1., k = 2, .5, p IN (1, k), .4, .2 / (k - 2))",
    "markov": "1 / k",
    "shapley": "1 / k",
}


def attribution_sql(db: str, version: int) -> str:
    """``INSERT`` of every model's credit of the converted journeys' *version*."""
    models = _arr(tuple(CREDITS))
    credit = "multiIf(" + ", ".join(f"model = '{m}', {e}" for m, e in CREDITS.items()) + ", 0.)"
    return f"""
INSERT INTO {db}.attribution
SELECT
    conversion_event_id, journey_id, person_id, model, path[p] AS channel, '' AS campaign,
    toUInt32(p) AS touch_position, {credit} AS credit, credit * revenue AS revenue_credit,
    if(model = 'markov', 'bench-1', '') AS model_version, ended_at AS converted_at, version
FROM
(
    SELECT conversion_event_id, journey_id, person_id, path, revenue, ended_at, version,
           length(path) AS k
    FROM {db}.journeys WHERE converted AND version = {version}
)
ARRAY JOIN {models} AS model
ARRAY JOIN arrayEnumerate(path) AS p
"""


def identity_sql(db: str, persons: int) -> list[str]:
    return [
        f"""
INSERT INTO {db}.identities
SELECT type, if(type = 'email_sha256', lower(hex(SHA256(concat('p', toString(p))))),
                concat(substring(type, 1, 1), toString(p))),
       concat('p', toString(p)), 'bench', toDateTime64('{START}', 3, 'UTC'), 0, 0
FROM (SELECT number AS p FROM numbers({persons}))
ARRAY JOIN ['anonymous_id', 'email_sha256', 'device_id'] AS type
""",
        f"""
INSERT INTO {db}.identity_merges
SELECT lower(hex(MD5(concat(kind, toString(p))))), kind,
       toDateTime64('{START}', 3, 'UTC') + toIntervalSecond(cityHash64(p, 20) % {DAYS * 86400}),
       concat('p', toString(p)), if(kind = 'MERGE', concat('q', toString(p)), ''),
       [if(kind = 'MERGE', 'email_sha256', 'anonymous_id')], [lower(hex(MD5(toString(p))))],
       if(kind = 'MERGE', 'email_sha256', 'new'), '', now64(3, 'UTC')
FROM (SELECT number AS p FROM numbers({persons}))
ARRAY JOIN if(p % 20 = 0, ['MAP', 'MERGE'], ['MAP']) AS kind
""",
        f"""
INSERT INTO {db}.attribution_models
SELECT 'markov', 'bench-1', c, 1 / (1 + cityHash64(c, 21) % 10), 100000, 12000,
       toDateTime64('{START}', 3, 'UTC')
FROM (SELECT arrayJoin({_arr(CHANNELS)}) AS c)
""",
    ]


def facts_sql(db: str) -> str:
    """The :data:`FACTS` Join table: per event id, what migration 0013 looks up."""
    return f"""
CREATE TABLE {db}.{FACTS} ENGINE = Join(ANY, LEFT, event_id)
AS SELECT event_id, max(source) AS source, max(device_type) AS device,
          max(event_type) AS event_type
FROM {db}.touchpoints GROUP BY event_id
"""


def generate(
    run: Callable[[str], object],
    db: str,
    touchpoints: int,
    chunk: int = 2_000_000,
    facts: bool = True,
) -> None:
    """Fill *db* (migrated, empty) through *run*: touchpoints in chunks, then the rest;
    without *facts*, journeys without the touch facts (a schema before 0013)."""
    persons = max(1, touchpoints // 11)
    journeys = touchpoints // SLOTS
    step = chunk - chunk % SLOTS
    for copy in (2, 1):
        for first in range(0, journeys * SLOTS, step):
            run(touchpoints_sql(db, first, min(step, journeys * SLOTS - first), persons, copy))
    jstep = step // SLOTS
    if facts:
        run(facts_sql(db))
    for old in (True, False):
        for first in range(0, journeys, jstep):
            run(journeys_sql(db, first, min(jstep, journeys - first), persons, old, facts))
    if facts:
        run(f"DROP TABLE {db}.{FACTS}")
    for version in (1, 2):
        run(attribution_sql(db, version))
    for sql in identity_sql(db, persons):
        run(sql)
