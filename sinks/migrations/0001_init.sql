-- 0001: the contract tables of database {db}.
-- Every table is a ReplacingMergeTree over a deterministic key, so at-least-once
-- delivery, replays and re-attribution never double count once rows are merged:
-- analysts read with FINAL (or argMax by version) where docs/analysts.md says so.

CREATE TABLE IF NOT EXISTS {db}.touchpoints
(
    event_id          String,
    source            LowCardinality(String),
    source_event_id   String,
    person_id         String,
    channel           LowCardinality(String),
    event_type        LowCardinality(String),
    occurred_at       DateTime64(3, 'UTC'),
    received_at       DateTime64(3, 'UTC'),
    identifier_types  Array(LowCardinality(String)),
    identifier_values Array(String),
    campaign_source   String,
    campaign_medium   String,
    campaign_name     String,
    campaign_content  String,
    campaign_term     String,
    click_id          String,
    referrer          String,
    device_type       LowCardinality(String),
    store_id          String,
    order_id          String,
    revenue           Float64,
    currency          LowCardinality(String),
    properties        Map(String, String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    ingested_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.identities
(
    identifier_type  LowCardinality(String),
    identifier_value String,
    person_id        String,
    rule             LowCardinality(String),
    updated_at       DateTime64(3, 'UTC'),
    is_deleted       UInt8
)
ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY (identifier_type, identifier_value)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.identity_merges
(
    change_id          String,
    kind               LowCardinality(String),
    at                 DateTime64(3, 'UTC'),
    person_id          String,
    absorbed_person_id String,
    identifier_types   Array(LowCardinality(String)),
    identifier_values  Array(String),
    rule               LowCardinality(String),
    event_id           String,
    ingested_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(at)
ORDER BY (change_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.journeys
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
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ended_at)
ORDER BY (journey_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.attribution
(
    conversion_event_id String,
    journey_id          String,
    person_id           String,
    model               LowCardinality(String),
    channel             LowCardinality(String),
    campaign            String,
    touch_position      UInt32,
    credit              Float64,
    revenue_credit      Float64,
    model_version       String,
    converted_at        DateTime64(3, 'UTC'),
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(converted_at)
ORDER BY (conversion_event_id, model, touch_position, channel)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dead_letter_id  String,
    source          LowCardinality(String),
    stage           LowCardinality(String),
    error           String,
    payload         String,
    location        String,
    topic           String,
    partition       Nullable(Int32),
    offset          Nullable(Int64),
    received_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (dead_letter_id)
SETTINGS non_replicated_deduplication_window = 10000;
