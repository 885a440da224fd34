-- Question: How many touches, and how many hops from one channel to another, happen
--   before a conversion?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per (touches, hops) of converted journeys. touches is the path length
--   (a web/app session is one touch); hops counts adjacent touches of different
--   channels (email > email > store has 3 touches and 1 hop), so hops < touches.
--   conversions sums to the converted journeys.
-- FINAL: needed (journeys is a ReplacingMergeTree by version).
SELECT
    touch_count AS touches,
    hops,
    count() AS conversions,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(avg(length(arrayDistinct(path))), 2) AS avg_distinct_channels,
    round(avg(days_to_convert), 2) AS avg_days_to_convert,
    round(sum(revenue), 2) AS revenue
FROM journeys.journeys FINAL
WHERE converted
  AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY touches, hops
ORDER BY touches, hops
