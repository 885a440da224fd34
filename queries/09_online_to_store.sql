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
-- FINAL: needed on journeys (ReplacingMergeTree by version). Each journey carries its
--   touches' sources and its conversion's event type (migration 0013), so touchpoints
--   are not read. The latest online touch is the first one at the latest online time,
--   as an argMax over the touches in order would pick it.
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
        revenue AS order_revenue,
        ended_at AS purchased_at,
        arrayFilter((t, s) -> s = 'segment', touch_times, touch_sources) AS online_times,
        length(online_times) AS online_touches,
        if(online_touches = 0, toDateTime64(0, 3, 'UTC'), arrayMax(online_times))
            AS last_online_at,
        arrayFilter((c, s) -> s = 'segment', path, touch_sources)[
            indexOf(online_times, last_online_at)] AS last_channel
    FROM journeys.journeys FINAL
    WHERE converted
      AND conversion_event_type = 'store_purchase'
      AND toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
)
GROUP BY last_online_channel
ORDER BY last_online_channel = '(no online touch)', store_conversions DESC, last_online_channel
