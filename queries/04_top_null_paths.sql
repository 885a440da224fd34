-- Question: Which paths do customers take most often without converting (null paths)?
--   These are what the data-driven models (markov, shapley) learn against.
-- Parameters:
--   since  Date    = 1970-01-01  first day (UTC) a journey closed, included
--   until  Date    = 2100-01-01  first day (UTC) a journey closed, excluded
--   limit  UInt32  = 20          paths to show
-- Grain: one row per distinct path with at least one null journey: the null journeys, the
--   conversions on the same path, and its conversion rate. A journey becomes a null path
--   when it passes its last touch plus the inactivity window (30 days by default) in
--   event time; open journeys are not counted.
-- FINAL: needed (journeys is a ReplacingMergeTree by version).
SELECT
    arrayStringConcat(path, ' > ') AS journey_path,
    length(any(path)) AS touches,
    countIf(NOT converted) AS nulls,
    countIf(converted) AS conversions,
    round(conversions / count(), 3) AS conversion_rate,
    round(avgIf(dateDiff('second', started_at, ended_at) / 86400, NOT converted), 1)
        AS avg_days_open
FROM journeys.journeys FINAL
WHERE toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY journey_path
HAVING nulls > 0
ORDER BY nulls DESC, conversions, journey_path
LIMIT {limit:UInt32}
