-- 0005: identities keeps the row of the newest change in processing order.
--
-- Until now identities was a ReplacingMergeTree(updated_at, is_deleted), and updated_at
-- is the identity change's event time. A re-derivation (rule reorder) moves identifiers
-- with the event time of the late event that caused it, older than the MAP it
-- supersedes, so FINAL kept the stale person. IdentityChange v2 carries version, a
-- sequence kept in the identity owner's state that only goes forward, and the table is
-- rebuilt as a ReplacingMergeTree(version, is_deleted) keyed as before.
--
-- Repair of the existing rows (written before versions existed, so they get version 0
-- and every new change wins over them). No processing order was recorded for them, and
-- background merges have already dropped all but the newest row by event time, so the
-- newest row by processing order cannot be recovered from identities. identity_merges
-- holds every MERGE with the identifiers it moved, and a person absorbed by a MERGE is
-- no longer a live person. So each identifier starts from its newest row by event time
-- (the old FINAL answer) and follows the MERGEs that moved it, absorbed person to
-- survivor (the latest one by event time when a person was absorbed more than once),
-- until it reaches a person no MERGE absorbed. A visited person ends the walk, so a
-- cycle (a reorder that reversed an older merge) stops. This repairs the failure the
-- old table showed: an identifier left with a person that a reorder MERGE had absorbed.
-- A reorder MAP that moved identifiers between two persons that both stay live cannot
-- be ordered from stored data. Replaying the log into empty stores repairs that case
-- too (the graph is a function of the set of events). Repaired rows that changed
-- person carry rule repair:0005. Deleted (forgotten) identifiers stay deleted.
--
-- On a cluster every statement runs ON CLUSTER: each node rebuilds its own shard of
-- identities from its local identity_merges rows (sharded by change_id, so a shard sees
-- only part of them), and identities_all is dropped here for migrate to create again
-- with the version column. A multi-shard cluster repairs fully only by a replay.

DROP TABLE IF EXISTS {db}.identities_0005;

CREATE TABLE {db}.identities_0005
(
    identifier_type  LowCardinality(String),
    identifier_value String,
    person_id        String,
    rule             LowCardinality(String),
    updated_at       DateTime64(3, 'UTC'),
    version          UInt64,
    is_deleted       UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (identifier_type, identifier_value)
SETTINGS non_replicated_deduplication_window = 10000
AS
SELECT
    identifier_type,
    identifier_value,
    if(
        last_deleted = 1,
        last_person,
        arrayFold(
            (acc, step) -> if(
                has(absorbed, acc.1)
                    AND NOT has(acc.2, survivors[indexOf(absorbed, acc.1)]),
                (survivors[indexOf(absorbed, acc.1)], arrayPushBack(acc.2, acc.1)),
                acc
            ),
            range(64),
            (last_person, CAST([], 'Array(String)'))
        ).1
    ) AS repaired_person,
    if(repaired_person = last_person, last_rule, 'repair:0005') AS repaired_rule,
    last_at,
    toUInt64(0),
    last_deleted
FROM
(
    SELECT
        identifier_type,
        identifier_value,
        argMax(person_id, updated_at) AS last_person,
        argMax(rule, updated_at) AS last_rule,
        max(updated_at) AS last_at,
        argMax(is_deleted, updated_at) AS last_deleted
    FROM {db}.identities
    GROUP BY identifier_type, identifier_value
) AS rows
LEFT JOIN
(
    SELECT
        identifier_type,
        identifier_value,
        arrayMap(x -> x.2, arrayReverseSort(groupArray((at, absorbed_person_id, person_id)))) AS absorbed,
        arrayMap(x -> x.3, arrayReverseSort(groupArray((at, absorbed_person_id, person_id)))) AS survivors
    FROM
    (
        SELECT at, absorbed_person_id, person_id, moved_type AS identifier_type, moved_value AS identifier_value
        FROM {db}.identity_merges
        ARRAY JOIN identifier_types AS moved_type, identifier_values AS moved_value
        WHERE kind = 'MERGE' AND absorbed_person_id != ''
    )
    GROUP BY identifier_type, identifier_value
) AS merges
USING (identifier_type, identifier_value);

DROP TABLE IF EXISTS {db}.identities_all;

EXCHANGE TABLES {db}.identities AND {db}.identities_0005;

DROP TABLE {db}.identities_0005;
