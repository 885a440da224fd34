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
-- FINAL: needed on journeys (ReplacingMergeTree by version). Device types are looked up
--   with max() per event id, which duplicates cannot change, only for the event ids of
--   converted journeys (the set is built from journeys without FINAL: older versions
--   only add ids that nothing joins), matched by their 64-bit hash, which is cheaper to
--   look up than the string: the join on event_id is exact, so a hash collision only
--   adds a row that joins nothing. One read of touchpoints.
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
        c.journey_id AS journey_id,
        any(c.touch_count) AS touches,
        any(c.revenue) AS order_revenue,
        arraySort(groupUniqArrayIf(d.device, NOT c.is_conversion AND d.device != ''))
            AS devices,
        maxIf(d.device, c.is_conversion) AS conversion_device_type
    FROM
    (
        SELECT journey_id, revenue, touch_count, event_id, is_conversion
        FROM journeys.journeys FINAL
        ARRAY JOIN
            arrayPushBack(touch_event_ids, conversion_event_id) AS event_id,
            arrayPushBack(arrayMap(x -> 0, touch_event_ids), 1) AS is_conversion
        WHERE converted
          AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
    ) AS c
    LEFT JOIN
    (
        SELECT event_id, max(device_type) AS device
        FROM journeys.touchpoints
        WHERE device_type != ''
          AND cityHash64(event_id) IN
              (
                  SELECT cityHash64(arrayJoin(arrayPushBack(touch_event_ids, conversion_event_id)))
                  FROM journeys.journeys
                  WHERE converted
                    AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
              )
        GROUP BY event_id
    ) AS d ON d.event_id = c.event_id
    GROUP BY journey_id
)
GROUP BY touch_devices, conversion_device
ORDER BY conversions DESC, touch_devices, conversion_device
