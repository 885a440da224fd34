-- Question: How many conversions and how much revenue does each channel earn under each
--   of the eight attribution models, side by side?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per channel. <model>_conv is the conversions credited to the channel
--   (a conversion's credits sum to 1 per model), <model>_rev the revenue credited.
--   Each _conv column sums to the number of converted journeys, each _rev column to
--   their revenue.
-- FINAL: not written here, because attribution_current reads attribution FINAL and keeps
--   only the latest version of each re-attributed conversion. Reading the attribution
--   table itself would count duplicates and superseded versions.
SELECT
    channel,
    round(sumIf(credit, model = 'first_touch'), 2) AS first_touch_conv,
    round(sumIf(credit, model = 'last_touch'), 2) AS last_touch_conv,
    round(sumIf(credit, model = 'last_non_direct'), 2) AS last_non_direct_conv,
    round(sumIf(credit, model = 'linear'), 2) AS linear_conv,
    round(sumIf(credit, model = 'time_decay'), 2) AS time_decay_conv,
    round(sumIf(credit, model = 'position_based'), 2) AS position_based_conv,
    round(sumIf(credit, model = 'markov'), 2) AS markov_conv,
    round(sumIf(credit, model = 'shapley'), 2) AS shapley_conv,
    round(sumIf(revenue_credit, model = 'first_touch'), 2) AS first_touch_rev,
    round(sumIf(revenue_credit, model = 'last_touch'), 2) AS last_touch_rev,
    round(sumIf(revenue_credit, model = 'last_non_direct'), 2) AS last_non_direct_rev,
    round(sumIf(revenue_credit, model = 'linear'), 2) AS linear_rev,
    round(sumIf(revenue_credit, model = 'time_decay'), 2) AS time_decay_rev,
    round(sumIf(revenue_credit, model = 'position_based'), 2) AS position_based_rev,
    round(sumIf(revenue_credit, model = 'markov'), 2) AS markov_rev,
    round(sumIf(revenue_credit, model = 'shapley'), 2) AS shapley_rev
FROM journeys.attribution_current
WHERE toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
GROUP BY channel
ORDER BY linear_conv DESC, channel
