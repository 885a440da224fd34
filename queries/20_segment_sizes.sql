-- Question: How many persons were in each segment at the end of each day?
-- Parameters:
--   since    Date    = 1970-01-01  first day included (UTC)
--   until    Date    = 2100-01-01  first day excluded (UTC)
--   segment  String  = (any)       only this segment; (any) for all
-- Grain: one row per (day, segment) for the days on which any membership began or
--   ended, within since..until. members is the number of memberships open at the end of
--   the day (entered on or before it, not exited by then); entered and exited count that
--   day's changes.
-- FINAL: needed on segment_membership (ReplacingMergeTree by version: an exit replaces
--   its entry).
WITH
    m AS
    (
        SELECT person_id, segment, entered_at, if(is_member = 1, NULL, exited_at) AS exited_at
        FROM journeys.segment_membership FINAL
        WHERE {segment:String} = '(any)' OR segment = {segment:String}
    ),
    days AS
    (
        SELECT DISTINCT day FROM
        (
            SELECT toDate(entered_at) AS day FROM m
            UNION ALL
            SELECT toDate(exited_at) FROM m WHERE exited_at IS NOT NULL
        )
        WHERE day >= {since:Date} AND day < {until:Date}
    )
SELECT
    d.day AS day,
    m.segment AS segment,
    countIf(toDate(m.entered_at) <= d.day
            AND (m.exited_at IS NULL OR toDate(m.exited_at) > d.day)) AS members,
    countIf(toDate(m.entered_at) = d.day) AS entered,
    countIf(m.exited_at IS NOT NULL AND toDate(m.exited_at) = d.day) AS exited
FROM days AS d
CROSS JOIN m
GROUP BY day, segment
HAVING members > 0 OR entered > 0 OR exited > 0
ORDER BY day, segment
