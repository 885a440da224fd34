-- 0003: what analysts read most, kept cheap to read.
--
-- daily_channel_credit: credit, revenue credit and touches per day (of conversion),
-- model and channel. Attribution is a ReplacingMergeTree with versions: duplicates from
-- at-least-once delivery and older versions of re-attributed conversions stay in the
-- table until merges remove them. An incremental (insert-triggered) materialized view
-- would count both, and it cannot take back the credit a re-attribution moves away
-- from a channel. So this one is a refreshable materialized view over
-- attribution_current: every refresh recomputes the totals from the current credit and
-- swaps them in atomically, exact whenever it is read, at most one refresh period
-- behind. Live, to-the-second totals: read attribution_current (docs/analysts.md).
-- Needs ClickHouse 24.10 or later (chDB 3+). The table is written whole by each refresh,
-- so reads need no FINAL.

CREATE TABLE IF NOT EXISTS {db}.daily_channel_credit
(
    day                 Date,
    model               LowCardinality(String),
    channel             LowCardinality(String),
    conversions         Float64,
    revenue             Float64,
    touches             UInt64,
    conversions_touched UInt64,
    refreshed_at        DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (model, day, channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_channel_credit_mv
REFRESH EVERY 1 MINUTE
TO {db}.daily_channel_credit
AS SELECT
    toDate(converted_at) AS day,
    model,
    channel,
    sum(credit) AS conversions,
    sum(revenue_credit) AS revenue,
    count() AS touches,
    uniqExact(conversion_event_id) AS conversions_touched,
    now64(3, 'UTC') AS refreshed_at
FROM {db}.attribution_current
GROUP BY day, model, channel;

-- Person lookups (one customer's touchpoints or journeys, `journeys forget`) would
-- otherwise read every granule: the tables are ordered by their natural keys.
ALTER TABLE {db}.touchpoints
    ADD INDEX IF NOT EXISTS person_bf person_id TYPE bloom_filter(0.01) GRANULARITY 4;

ALTER TABLE {db}.journeys
    ADD INDEX IF NOT EXISTS person_bf person_id TYPE bloom_filter(0.01) GRANULARITY 4;

ALTER TABLE {db}.journeys
    ADD INDEX IF NOT EXISTS conversion_bf conversion_event_id TYPE bloom_filter(0.01) GRANULARITY 4;
