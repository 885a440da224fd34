-- Question: How often do customers buy, and how long do they wait between orders?
-- Parameters:
--   stage  String  = (any)  only this lifecycle stage (prospect, first_time_buyer, repeat,
--                           loyal, at_risk, lapsed); (any) for all
-- Grain: one row per number of orders (1, 2, 3, 4, 5+) among persons with an order.
--   customers and share of buyers; repeat_rate is the share of buyers with this many
--   orders or more; mean_days_between_orders (the repeat interval) and
--   orders_per_30_days are averaged over the bucket's customers.
-- FINAL: needed on persons (ReplacingMergeTree by version; absorbed persons are deleted).
WITH buyers AS
(
    SELECT person_id, orders, revenue, mean_days_between_orders, purchase_frequency
    FROM journeys.persons FINAL
    WHERE orders > 0 AND ({stage:String} = '(any)' OR lifecycle_stage = {stage:String})
)
SELECT
    if(orders >= 5, '5+', toString(orders)) AS orders_bucket,
    count() AS customers,
    round(100 * customers / sum(customers) OVER (), 1) AS share_pct,
    round(100 * sum(customers) OVER (ORDER BY orders_bucket DESC) / sum(customers) OVER (), 1)
        AS repeat_rate_pct,
    round(avgIfOrNull(mean_days_between_orders, orders > 1), 1) AS mean_days_between_orders,
    round(avg(purchase_frequency), 2) AS orders_per_30_days,
    round(avg(revenue), 2) AS avg_revenue
FROM buyers
GROUP BY orders_bucket
ORDER BY orders_bucket
