-- Question: Which channels assist conversions: appear in the converting path without
--   being its last touch?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per channel. conversions_touched: converted journeys whose path holds
--   the channel; last_touch_conversions: those where it is the last touch (sums to the
--   converted journeys); assisted_conversions: those where it appears but is not last;
--   assist_ratio = assisted / last-touch (above 1: the channel opens or nurtures more
--   sales than it closes).
-- FINAL: needed (journeys is a ReplacingMergeTree by version).
SELECT
    channel,
    count() AS conversions_touched,
    countIf(path[-1] = channel) AS last_touch_conversions,
    countIf(path[-1] != channel) AS assisted_conversions,
    countIf(path[1] = channel) AS first_touch_conversions,
    round(assisted_conversions / nullIf(last_touch_conversions, 0), 2) AS assist_ratio,
    round(sumIf(revenue, path[-1] != channel), 2) AS assisted_revenue
FROM journeys.journeys FINAL
ARRAY JOIN arrayDistinct(path) AS channel
WHERE converted
  AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY channel
ORDER BY assisted_conversions DESC, channel
