-- 0010: customer profiles, segment membership and its history (issue 17).
--
-- `persons` holds one row per person (the newest version wins); a person absorbed by a
-- merge gets a last row with merged_into set and is_deleted = 1, so `persons FINAL`
-- lists live persons only. Versions count each person's changes in processing order.
--
-- `segment_membership` holds one row per membership (person, segment, entered_at): the
-- entry writes is_member = 1, the exit the same key with is_member = 0 and exited_at, so
--   SELECT person_id FROM segment_membership FINAL WHERE segment = 'x' AND is_member = 1
-- lists the current members and earlier memberships stay queryable.
-- `audience_changes` keeps every AudienceChange (entries and exits) as published.

CREATE TABLE IF NOT EXISTS {db}.persons
(
    person_id                 String,
    as_of                     DateTime64(3, 'UTC'),
    first_seen                DateTime64(3, 'UTC'),
    last_seen                 DateTime64(3, 'UTC'),
    channels                  Map(LowCardinality(String), UInt32),
    devices                   Map(LowCardinality(String), UInt32),
    platforms                 Map(LowCardinality(String), UInt32),
    email_opens               UInt32,
    email_clicks              UInt32,
    sms_clicks                UInt32,
    push_opens                UInt32,
    app_screens               UInt32,
    store_visits              UInt32,
    qr_scans                  UInt32,
    wifi_logins               UInt32,
    orders                    UInt32,
    revenue                   Float64,
    average_order_value       Float64,
    purchase_frequency        Float64,
    mean_days_between_orders  Float64,
    last_purchase             Nullable(DateTime64(3, 'UTC')),
    bopis_orders              UInt32,
    preferred_channel         LowCardinality(String),
    app_user                  UInt8,
    cart_items                UInt32,
    cart_value                Float64,
    cart_since                Nullable(DateTime64(3, 'UTC')),
    lifecycle_stage           LowCardinality(String),
    segments                  Array(LowCardinality(String)),
    merged_into               String,
    version                   UInt64,
    is_deleted                UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (person_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.segment_membership
(
    person_id   String,
    segment     LowCardinality(String),
    is_member   UInt8,
    entered_at  DateTime64(3, 'UTC'),
    exited_at   Nullable(DateTime64(3, 'UTC')),
    reason      String,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (segment, person_id, entered_at)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.audience_changes
(
    person_id   String,
    segment     LowCardinality(String),
    change      LowCardinality(String),
    at          DateTime64(3, 'UTC'),
    entered_at  DateTime64(3, 'UTC'),
    reason      String,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (segment, person_id, version)
SETTINGS non_replicated_deduplication_window = 10000;
