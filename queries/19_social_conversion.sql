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
-- FINAL: needed on journeys (ReplacingMergeTree by version), read once: each journey
--   gives one row per social channel it touched and one for 'all channels'. The credit
--   comes from daily_channel_credit by conversion day, which is the day a converted
--   journey ends (refreshed by the sink every minute: exact, at most a minute behind;
--   attribution_current gives the live figures, 0.5 s more at a year of data).
SELECT
    channel,
    count() AS journeys,
    countIf(is_converted) AS converted,
    round(100 * converted / journeys, 2) AS conversion_rate_pct,
    countIf(is_converted AND (channel = 'all channels' OR last_channel = channel))
        AS last_touch_conversions,
    if(channel = 'all channels', round(countIf(is_converted), 2), round(any(c.credit), 2))
        AS credit,
    if(channel = 'all channels', round(sumIf(revenue, is_converted), 2),
       round(any(c.revenue_credit), 2)) AS revenue_credit
FROM
(
    SELECT
        arrayJoin(arrayPushBack(arrayFilter(x -> x LIKE '%social%', arrayDistinct(path)),
                                'all channels')) AS channel,
        converted = 1 AS is_converted,
        path[-1] AS last_channel,
        revenue
    FROM journeys.journeys FINAL
    WHERE toDate(ended_at) >= {since:Date} AND toDate(ended_at) < {until:Date}
) AS t
LEFT JOIN
(
    SELECT channel, sum(conversions) AS credit, sum(revenue) AS revenue_credit
    FROM journeys.daily_channel_credit
    WHERE model = {model:String} AND day >= {since:Date} AND day < {until:Date}
    GROUP BY channel
) AS c ON c.channel = t.channel
GROUP BY channel
ORDER BY journeys DESC, channel
