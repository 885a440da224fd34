-- 0013: journeys carry each touch's source and device and the conversion's event type
-- and device, for queries/09_online_to_store.sql and 11_device_mix.sql at a year of
-- data (docs/performance.md).
--
-- Those queries looked each touch event id of the converted journeys up in touchpoints,
-- which is ordered by a random event id: every read scanned all of its event ids. The
-- journey stage now writes what they need (schemas/Journey.avsc v3); this migration gives
-- the rows written before it the same values, looked up once: a touch's source is its
-- event's, its device the largest device type of the event's rows ('' when none has one),
-- the conversion's type and device likewise. A touch whose event is not in touchpoints
-- gets ''. The table is rebuilt with the new columns (as 0009 did) and exchanged.
CREATE TABLE IF NOT EXISTS {db}.touch_facts_0013
ENGINE = Join(ANY, LEFT, event_id)
AS SELECT event_id, max(source) AS source, max(device_type) AS device,
          max(event_type) AS event_type
FROM {db}.touchpoints
WHERE event_id IN (SELECT arrayJoin(arrayPushBack(touch_event_ids, conversion_event_id))
                   FROM {db}.journeys)
GROUP BY event_id;

CREATE TABLE IF NOT EXISTS {db}.journeys_v3
(
    journey_id            String,
    person_id             String,
    started_at            DateTime64(3, 'UTC'),
    ended_at              DateTime64(3, 'UTC'),
    converted             UInt8,
    conversion_event_id   String,
    revenue               Float64,
    path                  Array(LowCardinality(String)),
    touch_event_ids       Array(String),
    touch_times           Array(DateTime64(3, 'UTC')),
    touch_count           UInt32,
    hops                  UInt32,
    days_to_convert       Float64,
    version               UInt64,
    is_deleted            UInt8 DEFAULT 0,
    touch_sources         Array(LowCardinality(String)),
    touch_devices         Array(LowCardinality(String)),
    conversion_event_type LowCardinality(String),
    conversion_device     LowCardinality(String),
    INDEX person_bf person_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX conversion_bf conversion_event_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(if(converted = 1, ended_at, started_at))
ORDER BY (journey_id)
SETTINGS non_replicated_deduplication_window = 10000;

INSERT INTO {db}.journeys_v3
SELECT journey_id, person_id, started_at, ended_at, converted, conversion_event_id, revenue,
       path, touch_event_ids, touch_times, touch_count, hops, days_to_convert, version,
       is_deleted,
       arrayMap(id -> joinGet('{db}.touch_facts_0013', 'source', id), touch_event_ids),
       arrayMap(id -> joinGet('{db}.touch_facts_0013', 'device', id), touch_event_ids),
       joinGet('{db}.touch_facts_0013', 'event_type', conversion_event_id),
       joinGet('{db}.touch_facts_0013', 'device', conversion_event_id)
FROM {db}.journeys;

EXCHANGE TABLES {db}.journeys AND {db}.journeys_v3;

DROP TABLE {db}.journeys_v3;

DROP TABLE {db}.touch_facts_0013;
