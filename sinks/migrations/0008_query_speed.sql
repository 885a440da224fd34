-- 0008: one person's touchpoints, and the current credit, at a year of data
-- (docs/performance.md).
--
-- touchpoints is ordered by event_id, the key that replaces a
-- redelivered or forwarded row, so it cannot be ordered by person. A projection keeps
-- (person_id, occurred_at, event_id) ordered by person: a query without FINAL that
-- filters on person_id reads a few granules of it, and the exact person lookup of
-- docs/analysts.md turns its event ids into primary-key reads. A ReplacingMergeTree
-- accepts a projection only when merges and lightweight deletes (journeys forget)
-- rebuild it. MATERIALIZE builds it for the parts already written.
ALTER TABLE {db}.touchpoints
    MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild',
                   lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE {db}.touchpoints
    ADD PROJECTION IF NOT EXISTS by_person
    (
        SELECT person_id, occurred_at, event_id
        ORDER BY person_id, occurred_at
    );

ALTER TABLE {db}.touchpoints MATERIALIZE PROJECTION by_person SETTINGS mutations_sync = 2;

-- attribution_current without reading all of attribution. It kept the rows whose version
-- is their conversion's max(version), and found that max over the whole table at every
-- read. Only conversions attributed again have a version above 1: an insert-triggered
-- view keeps their latest version (POPULATE fills it from the rows already there; the
-- sink writes through the view from then on), and a conversion absent from it has only
-- version-1 rows, all current. Same rows as before, from a table of the re-attributed
-- conversions alone.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attribution_reattributed
ENGINE = ReplacingMergeTree(version)
ORDER BY conversion_event_id
POPULATE
AS SELECT conversion_event_id, max(version) AS version
FROM {db}.attribution
GROUP BY conversion_event_id
HAVING version > 1;

CREATE OR REPLACE VIEW {db}.attribution_current AS
SELECT *
FROM {db}.attribution FINAL
WHERE (version = 1
       AND conversion_event_id NOT IN (SELECT conversion_event_id FROM {db}.attribution_reattributed))
   OR (conversion_event_id, version) IN
      (SELECT conversion_event_id, max(version) FROM {db}.attribution_reattributed
       GROUP BY conversion_event_id);
