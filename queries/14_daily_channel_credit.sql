-- Question: How many conversions and how much revenue does each channel earn per day,
--   under one model, read from the pre-aggregated daily table?
-- Parameters:
--   model  String  = linear      attribution model (first_touch, last_touch,
--                                last_non_direct, linear, time_decay, position_based,
--                                markov, shapley)
--   since  Date    = 1970-01-01  first conversion day included (UTC)
--   until  Date    = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per (day, channel). daily_channel_credit is a refreshable materialized
--   view over attribution_current (migration 0003): exact at each refresh, and at most one
--   refresh (1 minute) behind; refreshed_at says when. For live totals to the second, run
--   01_channel_credit_by_model.sql with since/until instead.
-- FINAL: not needed: each refresh replaces the whole table atomically, one row per key.
SELECT
    day,
    channel,
    round(conversions, 2) AS conversions,
    round(revenue, 2) AS revenue,
    touches,
    conversions_touched,
    refreshed_at
FROM journeys.daily_channel_credit
WHERE model = {model:String}
  AND day >= {since:Date} AND day < {until:Date}
ORDER BY day, conversions DESC, channel
