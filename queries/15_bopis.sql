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
--   by event_id). One scan: the online orders are counted per (channel, store, pickup),
--   and a window over the channel gives its online orders.
SELECT
    channel,
    pickup_store,
    pickup_orders,
    revenue,
    round(pickup_orders / channel_orders, 3) AS share_of_online
FROM
(
    SELECT
        channel,
        if(store_id = '', '(unknown)', store_id) AS pickup_store,
        properties['fulfillment'] = 'pickup' AS pickup,
        count() AS pickup_orders,
        round(sum(revenue), 2) AS revenue,
        sum(pickup_orders) OVER (PARTITION BY channel) AS channel_orders
    FROM journeys.touchpoints FINAL
    WHERE source = 'shopify' AND properties['sales_channel'] = 'online'
      AND toDate(occurred_at) >= {since:Date} AND toDate(occurred_at) < {until:Date}
    GROUP BY channel, pickup_store, pickup
)
WHERE pickup
ORDER BY pickup_orders DESC, channel, pickup_store
