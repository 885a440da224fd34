-- Question: When are customers active and when do they buy: which hours of which weekdays,
--   on which channels?
-- Parameters:
--   since  Date    = 1970-01-01  first day included (in tz)
--   until  Date    = 2100-01-01  first day excluded (in tz)
--   tz     String  = UTC         time zone of the hours and weekdays (e.g. America/New_York)
-- Grain: one row per (weekday, hour, channel) with at least one event. weekday is 1 =
--   Monday ... 7 = Sunday. events counts touchpoints (page views, clicks, orders...),
--   people the distinct persons, orders the conversions (purchase event types).
-- FINAL: not needed (touchpoints are deduplicated by event id with any()).
WITH events AS
(
    SELECT event_id, any(occurred_at) AS at, any(channel) AS channel, any(person_id) AS person_id,
           any(event_type) IN ('purchase', 'order_completed', 'store_purchase', 'marketplace_purchase')
               AS is_order,
           any(revenue) AS revenue
    FROM journeys.touchpoints
    WHERE toDate(occurred_at, {tz:String}) >= {since:Date}
      AND toDate(occurred_at, {tz:String}) < {until:Date}
    GROUP BY event_id
)
SELECT
    toDayOfWeek(at, 0, {tz:String}) AS weekday,
    toHour(at, {tz:String}) AS hour,
    channel,
    count() AS events,
    uniqExact(person_id) AS people,
    countIf(is_order) AS orders,
    round(sumIf(revenue, is_order), 2) AS revenue
FROM events
GROUP BY weekday, hour, channel
ORDER BY weekday, hour, events DESC, channel
