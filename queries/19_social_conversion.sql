-- Question: How do social channels convert: how many journeys they touch, how many of
--   those convert, and how much credit they earn?
-- Parameters:
--   since  Date    = 1970-01-01  first journey end day included (UTC)
--   until  Date    = 2100-01-01  first journey end day excluded (UTC)
--   model  String  = linear      attribution model for the credit columns
-- Grain: one row per channel whose name contains 'social' (organic_social, paid_social),
--   plus 'all channels' for comparison. journeys counts closed journeys (converted and
--   null paths) with at least one touch of the channel; conversion_rate_pct is converted /
--   journeys; last_touch_conversions counts conversions whose last touch is the channel;
--   credit and revenue_credit come from the model (for 'all channels': every conversion
--   and its revenue).
-- FINAL: needed on journeys; credit is read from attribution_current.
WITH
    j AS
    (
        SELECT journey_id, converted, path, revenue
        FROM journeys.journeys FINAL
        WHERE toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
    ),
    touched AS
    (
        SELECT social AS channel, journey_id, any(j.converted) AS is_converted,
               any(j.path) AS journey_path
        FROM j
        ARRAY JOIN arrayDistinct(j.path) AS social
        WHERE social LIKE '%social%'
        GROUP BY social, journey_id
    ),
    credit AS
    (
        SELECT channel, sum(credit) AS credit, sum(revenue_credit) AS revenue_credit
        FROM journeys.attribution_current
        WHERE model = {model:String}
          AND journey_id IN (SELECT journey_id FROM j WHERE converted)
        GROUP BY channel
    )
SELECT * FROM
(
    SELECT
        t.channel AS channel,
        count() AS journeys,
        countIf(t.is_converted) AS converted,
        round(100 * converted / journeys, 2) AS conversion_rate_pct,
        countIf(t.is_converted AND t.journey_path[-1] = t.channel) AS last_touch_conversions,
        round(any(c.credit), 2) AS credit,
        round(any(c.revenue_credit), 2) AS revenue_credit
    FROM touched AS t
    LEFT JOIN credit AS c ON c.channel = t.channel
    GROUP BY t.channel
    UNION ALL
    SELECT 'all channels', count(), countIf(converted), round(100 * countIf(converted) / count(), 2),
           countIf(converted), round(countIf(converted), 2), round(sumIf(revenue, converted), 2)
    FROM j
)
ORDER BY journeys DESC, channel
