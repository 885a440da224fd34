-- Question: How much do shoppers buy online and collect in a store (BOPIS), through
--   which acquisition channels, and at which stores?
-- Parameters:
--   since  Date  = 1970-01-01  first order day included (UTC)
--   until  Date  = 2100-01-01  first order day excluded (UTC)
-- Grain: one row per (channel, pickup store) of online orders collected in a store:
--   Shopify orders whose shipping line is a local pickup (properties['fulfillment'] =
--   'pickup'; store_id is the pickup location). channel is the order's own acquisition
--   channel (landing page UTMs, click ids, referrer). share_of_online is the share of all
--   online orders of that channel that were collected in a store.
-- FINAL: needed on touchpoints, which a replay may have written twice (ReplacingMergeTree
--   by event_id).
WITH online AS
(
    SELECT channel, store_id, revenue, properties['fulfillment'] = 'pickup' AS pickup
    FROM journeys.touchpoints FINAL
    WHERE source = 'shopify' AND properties['sales_channel'] = 'online'
      AND toDate(occurred_at) >= {since:Date} AND toDate(occurred_at) < {until:Date}
)
SELECT
    channel,
    if(store_id = '', '(unknown)', store_id) AS pickup_store,
    count() AS pickup_orders,
    round(sum(revenue), 2) AS revenue,
    round(count() / any(channel_orders), 3) AS share_of_online
FROM online
INNER JOIN (SELECT channel, count() AS channel_orders FROM online GROUP BY channel) AS t
      USING (channel)
WHERE pickup
GROUP BY channel, pickup_store
ORDER BY pickup_orders DESC, channel, pickup_store
