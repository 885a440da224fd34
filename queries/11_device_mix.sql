-- Question: On which devices do converting journeys happen: one device, or several?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per (touch_devices, conversion_device) of converted journeys.
--   touch_devices is the sorted set of device types of the journey's touches ('desktop +
--   mobile' is a cross-device journey; '(none)' when every touch is offline or a message
--   click without a device); conversion_device is the device of the conversion event
--   ('(none)' for store, marketplace and server-side orders). conversions sums to the
--   converted journeys.
-- FINAL: needed on journeys (ReplacingMergeTree by version). Each journey carries its
--   touches' device types and its conversion's (migration 0013), so touchpoints are not
--   read.
SELECT
    if(empty(devices), '(none)', arrayStringConcat(devices, ' + ')) AS touch_devices,
    if(conversion_device_type = '', '(none)', conversion_device_type) AS conversion_device,
    count() AS conversions,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(avg(touches), 2) AS avg_touches,
    round(sum(order_revenue), 2) AS revenue
FROM
(
    SELECT
        arraySort(arrayDistinct(arrayFilter(d -> d != '', j.touch_devices))) AS devices,
        j.conversion_device AS conversion_device_type,
        j.touch_count AS touches,
        j.revenue AS order_revenue
    FROM journeys.journeys AS j FINAL
    WHERE j.converted
      AND toDate(j.ended_at) >= {since:Date} AND toDate(j.ended_at) < {until:Date}
)
GROUP BY touch_devices, conversion_device
ORDER BY conversions DESC, touch_devices, conversion_device
