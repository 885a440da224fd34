-- Question: How long does it take from the first touch of a journey to its conversion?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per time bucket (from the first credited touch to the conversion, in
--   event time; at most the 30-day lookback), with conversions, their share, revenue and
--   the median number of touches. conversions sums to the converted journeys.
-- FINAL: needed (journeys is a ReplacingMergeTree by version).
SELECT
    multiIf(
        days_to_convert < 1 / 24, 'under 1 hour',
        days_to_convert < 1, '1 to 24 hours',
        days_to_convert < 3, '1 to 3 days',
        days_to_convert < 7, '3 to 7 days',
        days_to_convert < 14, '7 to 14 days',
        days_to_convert < 30, '14 to 30 days',
        '30 days or more'
    ) AS time_to_convert,
    count() AS conversions,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(100 * sum(conversions) OVER (ORDER BY min(days_to_convert)) / sum(conversions) OVER (), 1)
        AS cumulative_pct,
    round(median(touch_count), 1) AS median_touches,
    round(sum(revenue), 2) AS revenue
FROM journeys.journeys FINAL
WHERE converted
  AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
GROUP BY time_to_convert
ORDER BY min(days_to_convert)
