-- 0009: journeys that late events and merges revise or retract.
--
-- A journey row is replaced by its newer versions (the version grows in processing
-- order). A null path that a late conversion or a merge absorbed is *retracted*: its
-- last row has is_deleted = 1, so `journeys FINAL` no longer shows it. The partition key
-- uses only what never changes for a journey id (a conversion's time, a null path's
-- first touch), so every version of a row shares its partition: FINAL may then merge
-- within partitions only (do_not_merge_across_partitions_select_final).

CREATE TABLE IF NOT EXISTS {db}.journeys_v2
(
    journey_id          String,
    person_id           String,
    started_at          DateTime64(3, 'UTC'),
    ended_at            DateTime64(3, 'UTC'),
    converted           UInt8,
    conversion_event_id String,
    revenue             Float64,
    path                Array(LowCardinality(String)),
    touch_event_ids     Array(String),
    touch_times         Array(DateTime64(3, 'UTC')),
    touch_count         UInt32,
    hops                UInt32,
    days_to_convert     Float64,
    version             UInt64,
    is_deleted          UInt8 DEFAULT 0,
    INDEX person_bf person_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX conversion_bf conversion_event_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(if(converted = 1, ended_at, started_at))
ORDER BY (journey_id)
SETTINGS non_replicated_deduplication_window = 10000;

INSERT INTO {db}.journeys_v2
SELECT journey_id, person_id, started_at, ended_at, converted, conversion_event_id, revenue,
       path, touch_event_ids, touch_times, touch_count, hops, days_to_convert, version, 0
FROM {db}.journeys;

EXCHANGE TABLES {db}.journeys AND {db}.journeys_v2;

DROP TABLE {db}.journeys_v2;
