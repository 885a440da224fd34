-- Question: Which channel paths convert most often, and how often does each path end
--   without a conversion?
-- Parameters:
--   since  Date    = 1970-01-01  first day (UTC) a journey closed, included
--   until  Date    = 2100-01-01  first day (UTC) a journey closed, excluded
--   limit  UInt32  = 20          paths to show
-- Grain: one row per distinct path (touch channels in order, joined by ' > '), with its
--   conversions, its null paths (journeys that expired without converting) and the
--   conversion rate among the journeys that took it. Journeys still open are not counted.
--   With a large enough limit, conversions sum to the converted journeys and nulls to the
--   expired ones.
-- FINAL: needed. journeys is a ReplacingMergeTree by version: a journey re-attributed
--   after an identity merge, or delivered twice, has several rows until merges run.
SELECT
    arrayStringConcat(path, ' > ') AS journey_path,
    length(any(path)) AS touches,
    countIf(converted) AS conversions,
    countIf(NOT converted) AS nulls,
    round(conversions / count(), 3) AS conversion_rate,
    round(sumIf(revenue, converted), 2) AS revenue
FROM journeys.journeys FINAL
WHERE toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY journey_path
ORDER BY conversions DESC, revenue DESC, nulls DESC, journey_path
LIMIT {limit:UInt32}
