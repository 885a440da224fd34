-- 0008: one person's touchpoints at a year of data (docs/performance.md).
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
