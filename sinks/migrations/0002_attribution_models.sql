-- 0002: snapshots of the data-driven models, and the current attribution.

CREATE TABLE IF NOT EXISTS {db}.attribution_models
(
    model        LowCardinality(String),
    version      String,
    channel      LowCardinality(String),
    weight       Float64,
    paths_seen   UInt64,
    conversions  Float64,
    computed_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (model, version, channel)
SETTINGS non_replicated_deduplication_window = 10000;

-- Only the latest version of each conversion's credit: re-attribution after an
-- identity merge writes a higher version, and older rows must not count.
CREATE VIEW IF NOT EXISTS {db}.attribution_current AS
SELECT *
FROM {db}.attribution FINAL
WHERE (conversion_event_id, version) IN
      (SELECT conversion_event_id, max(version) FROM {db}.attribution GROUP BY conversion_event_id);
