-- Question: When are customers active and when do they buy: which hours of which weekdays,
--   on which channels?
-- Parameters:
--   since  Date    = 1970-01-01  first day included (in tz)
--   until  Date    = 2100-01-01  first day excluded (in tz)
--   tz     String  = UTC         time zone of the hours and weekdays (e.g. America/New_York)
-- Grain: one row per (weekday, hour, channel) with at least one event. weekday is 1 =
--   Monday ... 7 = Sunday. events counts touchpoints (page views, clicks, orders...),
--   people the distinct persons, orders the conversions (purchase event types).
-- FINAL: needed on touchpoints (ReplacingMergeTree by event_id: a replay may have
--   written an event twice); each event counts once, with its newest row's person (the
--   merge survivor it was forwarded to), where any() picked an arbitrary row. The day
--   bounds are turned into instants once instead of converting every row, and persons
--   are counted by 64-bit hash (a collision among a year's million persons has a chance
--   of about 1 in 10^7). Each time is converted to the time zone once, and the rows are
--   grouped by one small key, the hour of the week (0 = Monday 00:00).
SELECT
    intDiv(hour_of_week, 24) + 1 AS weekday,
    hour_of_week % 24 AS hour,
    channel,
    count() AS events,
    uniqExact(cityHash64(person_id)) AS people,
    countIf(is_order) AS orders,
    round(sumIf(revenue, is_order), 2) AS revenue
FROM
(
    SELECT toDateTime(occurred_at, {tz:String}) AS local,
           toUInt8((toDayOfWeek(local, 0) - 1) * 24 + toHour(local)) AS hour_of_week,
           channel, person_id, revenue,
           event_type IN ('purchase', 'order_completed', 'store_purchase', 'marketplace_purchase')
               AS is_order
    FROM journeys.touchpoints FINAL
    WHERE occurred_at >= toDateTime64({since:Date}, 3, {tz:String})
      AND occurred_at < toDateTime64({until:Date}, 3, {tz:String})
)
GROUP BY hour_of_week, channel
ORDER BY weekday, hour, events DESC, channel
