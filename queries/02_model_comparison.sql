-- Question: How much credit does each model move between channels compared with
--   last-touch, the model most reports start from?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per (model, channel), every channel for every model (0 where a model
--   gives a channel nothing). delta_vs_last_touch is the conversions the model credits
--   minus what last_touch credits; it sums to 0 over the channels of a model, and
--   moved_share is the share of all conversions moved into (+) or out of (-) the channel.
-- FINAL: not written here: attribution_current reads attribution FINAL and keeps only
--   the latest version of each conversion. One read of attribution_current: the credit
--   per (model, channel) is gathered per channel into arrays, every model present is
--   joined back, and last_touch is looked up in the same arrays.
SELECT
    model,
    channel,
    round(credits[indexOf(models, model)], 2) AS credit,
    round(lt_credit, 2) AS last_touch_credit,
    round(credits[indexOf(models, model)] - lt_credit, 2) AS delta_vs_last_touch,
    round(100 * (credits[indexOf(models, model)] - lt_credit) / nullIf(lt_credit, 0), 1)
        AS delta_pct,
    round(100 * (credits[indexOf(models, model)] - lt_credit) / nullIf(lt_total, 0), 1)
        AS moved_share,
    round(revenues[indexOf(models, model)] - lt_revenue, 2) AS revenue_delta
FROM
(
    SELECT
        channel,
        groupArray(model) AS models,
        groupArray(credit) AS credits,
        groupArray(revenue) AS revenues,
        credits[indexOf(models, 'last_touch')] AS lt_credit,
        revenues[indexOf(models, 'last_touch')] AS lt_revenue,
        sum(lt_credit) OVER () AS lt_total,
        groupUniqArrayArray(groupArray(model)) OVER () AS all_models
    FROM
    (
        SELECT model, channel, sum(credit) AS credit, sum(revenue_credit) AS revenue
        FROM journeys.attribution_current
        WHERE toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
        GROUP BY model, channel
    )
    GROUP BY channel
)
ARRAY JOIN all_models AS model
ORDER BY model, delta_vs_last_touch DESC, channel
