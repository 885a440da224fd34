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
--   the latest version of each conversion.
WITH
    credit AS
    (
        SELECT model, channel, sum(credit) AS credit, sum(revenue_credit) AS revenue
        FROM journeys.attribution_current
        WHERE toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
        GROUP BY model, channel
    ),
    grid AS
    (
        SELECT m.model AS model, c.channel AS channel
        FROM (SELECT DISTINCT model FROM credit) AS m
        CROSS JOIN (SELECT DISTINCT channel FROM credit) AS c
    ),
    last_touch AS
    (
        SELECT channel, credit, revenue FROM credit WHERE model = 'last_touch'
    ),
    total AS
    (
        SELECT sum(credit) AS conversions FROM last_touch
    )
SELECT
    g.model AS model,
    g.channel AS channel,
    round(cr.credit, 2) AS credit,
    round(lt.credit, 2) AS last_touch_credit,
    round(cr.credit - lt.credit, 2) AS delta_vs_last_touch,
    round(100 * (cr.credit - lt.credit) / nullIf(lt.credit, 0), 1) AS delta_pct,
    round(100 * (cr.credit - lt.credit) / nullIf((SELECT conversions FROM total), 0), 1) AS moved_share,
    round(cr.revenue - lt.revenue, 2) AS revenue_delta
FROM grid AS g
LEFT JOIN credit AS cr ON cr.model = g.model AND cr.channel = g.channel
LEFT JOIN last_touch AS lt ON lt.channel = g.channel
ORDER BY g.model, delta_vs_last_touch DESC, g.channel
