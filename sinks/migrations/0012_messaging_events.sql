-- 0012: e-mail and SMS message events in a narrow table of their own, for
-- queries/10_email_sms_engagement.sql at a year of data (docs/performance.md).
--
-- Query 10 deduplicates about 3M SendGrid and Twilio events out of 10M touchpoints.
-- FINAL on touchpoints reads every row's event_id (the order key, 345 MiB at 10M rows)
-- before it can filter; a GROUP BY event_id over the filtered rows builds a 3M-key hash
-- table. Here the same rows, six columns wide, are ordered by event_id in a table of
-- their own, so FINAL merges only them: 1.2 instead of 4-7 CPU-seconds at 10M.
--
-- The table replaces rows exactly as touchpoints does (same version, ORDER BY and
-- PARTITION BY key), and an insert-triggered view fills it from every insert into
-- touchpoints (the sink, journeys rechannel), filtered by columns that never change
-- between the rows of one event. The INSERT copies the rows written before this
-- migration; a row the view also copied is a duplicate FINAL removes. journeys forget
-- deletes a person here too (sinks/runner.py).
CREATE TABLE IF NOT EXISTS {db}.messaging_events
(
    event_id      String,
    source        LowCardinality(String),
    person_id     String,
    channel       LowCardinality(String),
    event_type    LowCardinality(String),
    occurred_at   DateTime64(3, 'UTC'),
    ingested_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.messaging_events_mv
TO {db}.messaging_events
AS SELECT event_id, source, person_id, channel, event_type, occurred_at, ingested_at
FROM {db}.touchpoints
WHERE channel IN ('email', 'sms') AND source IN ('sendgrid', 'twilio');

INSERT INTO {db}.messaging_events
SELECT event_id, source, person_id, channel, event_type, occurred_at, ingested_at
FROM {db}.touchpoints
WHERE channel IN ('email', 'sms') AND source IN ('sendgrid', 'twilio');
