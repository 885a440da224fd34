-- Question: How many persons did identity stitching merge, and which links did it refuse,
--   by which rule?
-- Parameters:
--   since  Date  = 1970-01-01  first day (UTC, event time) included
--   until  Date  = 2100-01-01  first day (UTC, event time) excluded
-- Grain: one row per (kind, rule) of identity changes: MERGE (rule: the identifier type
--   that linked two persons; the older person survives), REFUSED (limit:<type>,
--   super_node:<type>, blocklist), FORGET, and MAP (a new identifier mapped to a
--   person). absorbed_persons counts the persons merged away; types lists the
--   identifier types involved (values are hashes or ids and are not shown). changes sums to the
--   rows of identity_merges.
-- FINAL: needed (identity_merges is a ReplacingMergeTree over change_id: a change
--   delivered twice has two rows until merges run).
SELECT
    kind,
    rule,
    count() AS changes,
    uniqExact(person_id) AS persons,
    uniqExactIf(absorbed_person_id, absorbed_person_id != '') AS absorbed_persons,
    sum(length(identifier_types)) AS identifiers,
    arrayStringConcat(arraySort(groupUniqArrayArray(identifier_types)), ', ') AS types,
    min(at) AS first_at,
    max(at) AS last_at
FROM journeys.identity_merges FINAL
WHERE toDate(at) >= {since:Date} AND toDate(at) < {until:Date}
GROUP BY kind, rule
ORDER BY indexOf(['MERGE', 'REFUSED', 'FORGET', 'MAP'], kind), changes DESC, rule
