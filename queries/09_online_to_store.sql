-- Question: How many store purchases follow web or app visits (research online, buy in
--   store), and which online channel came last before the store?
-- Parameters:
--   since        Date    = 1970-01-01  first conversion day included (UTC)
--   until        Date    = 2100-01-01  first conversion day excluded (UTC)
--   bopis_hours  UInt32  = 48          an online visit this close before the store purchase
--                                      counts as a click-and-collect (BOPIS) style visit
-- Grain: one row per last online channel before a store purchase ('(no online touch)'
--   when the journey holds no web or app session). A store purchase is a conversion whose
--   event is a store_purchase (POS CSV, Shopify POS orders); an online touch is a web or
--   app session (source segment). store_conversions sums to the store purchases.
--   within_window counts those with an online visit in the last bopis_hours (research
--   online, buy in store). Orders bought online and collected in a store (Shopify
--   local-pickup orders) are counted by 15_bopis.sql.
-- FINAL: needed on journeys (ReplacingMergeTree by version). The touchpoints subqueries
--   only build sets of event ids, where duplicate rows change nothing, so they skip FINAL.
--   The set of web/app touches is built only from the touches of store conversions, not
--   from every web and app event, matched by their 64-bit hash (cheaper to look up than
--   the string): a collision would only add an event id no journey holds, as the set is
--   then tested with the touch's own id.
SELECT
    if(online_touches = 0, '(no online touch)', last_channel) AS last_online_channel,
    count() AS store_conversions,
    round(100 * store_conversions / sum(store_conversions) OVER (), 1) AS pct,
    countIf(online_touches > 0
            AND dateDiff('second', last_online_at, purchased_at) <= 3600 * {bopis_hours:UInt32})
        AS within_window,
    round(avgIfOrNull(online_touches, online_touches > 0), 2) AS avg_online_touches,
    round(avgIfOrNull(dateDiff('second', last_online_at, purchased_at) / 3600, online_touches > 0), 1)
        AS avg_hours_online_to_store,
    round(sum(order_revenue), 2) AS revenue
FROM
(
    SELECT
        journey_id,
        any(revenue) AS order_revenue,
        any(ended_at) AS purchased_at,
        argMaxIf(touch_channel, touch_at, online) AS last_channel,
        maxIf(touch_at, online) AS last_online_at,
        countIf(online) AS online_touches
    FROM
    (
        SELECT
            journey_id, revenue, ended_at, touch_channel, touch_at,
            touch_id IN
            (
                SELECT event_id
                FROM journeys.touchpoints
                WHERE source = 'segment'
                  AND cityHash64(event_id) IN
                      (
                          SELECT cityHash64(arrayJoin(touch_event_ids))
                          FROM journeys.journeys
                          WHERE converted
                            AND conversion_event_id IN
                                (SELECT event_id FROM journeys.touchpoints
                                 WHERE event_type = 'store_purchase')
                            AND toDate(ended_at) >= {since:Date}
                            AND toDate(ended_at) < {until:Date}
                      )
            ) AS online
        FROM journeys.journeys FINAL
        LEFT ARRAY JOIN touch_event_ids AS touch_id, touch_times AS touch_at, path AS touch_channel
        WHERE converted
          AND conversion_event_id IN
              (SELECT event_id FROM journeys.touchpoints WHERE event_type = 'store_purchase')
          AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
    )
    GROUP BY journey_id
)
GROUP BY last_online_channel
ORDER BY last_online_channel = '(no online touch)', store_conversions DESC, last_online_channel
