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
--   with any() per event id, which duplicates cannot change.
WITH
    conv AS
    (
        SELECT journey_id, conversion_event_id, revenue, touch_count, touch_event_ids
        FROM journeys.journeys FINAL
        WHERE converted
          AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
    ),
    device AS
    (
        SELECT event_id, any(device_type) AS device
        FROM journeys.touchpoints
        WHERE device_type != ''
          AND event_id IN (SELECT arrayJoin(arrayPushBack(touch_event_ids, conversion_event_id)) FROM conv)
        GROUP BY event_id
    ),
    touch_devices AS
    (
        SELECT c.journey_id AS journey_id, arraySort(groupUniqArray(d.device)) AS devices
        FROM conv AS c
        ARRAY JOIN c.touch_event_ids AS touch_id
        INNER JOIN device AS d ON d.event_id = touch_id
        GROUP BY journey_id
    )
SELECT
    if(empty(td.devices), '(none)', arrayStringConcat(td.devices, ' + ')) AS touch_devices,
    if(cd.device = '', '(none)', cd.device) AS conversion_device,
    count() AS conversions,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(avg(c.touch_count), 2) AS avg_touches,
    round(sum(c.revenue), 2) AS revenue
FROM conv AS c
LEFT JOIN touch_devices AS td ON td.journey_id = c.journey_id
LEFT JOIN device AS cd ON cd.event_id = c.conversion_event_id
GROUP BY touch_devices, conversion_device
ORDER BY conversions DESC, touch_devices, conversion_device
