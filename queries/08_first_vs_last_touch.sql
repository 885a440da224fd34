-- Question: Which channel opens the journeys that another channel closes
--   (first-touch by last-touch matrix)?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per (first_channel, last_channel) pair of converted journeys, the long
--   form of the matrix (pivot it in your tool, or with sumIf per last channel).
--   conversions sums to the converted journeys; same_channel marks the diagonal.
-- FINAL: needed (journeys is a ReplacingMergeTree by version).
SELECT
    path[1] AS first_channel,
    path[-1] AS last_channel,
    first_channel = last_channel AS same_channel,
    count() AS conversions,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(sum(revenue), 2) AS revenue
FROM journeys.journeys FINAL
WHERE converted
  AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY first_channel, last_channel
ORDER BY conversions DESC, first_channel, last_channel
