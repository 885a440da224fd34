-- Question: How do first purchases (new customers) differ from repeat purchases
--   (returning customers) in value, path length, time to convert and channels?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per customer type. A conversion is 'new' when it is the person's first
--   conversion in ClickHouse (earlier conversions before since still make a later one
--   'returning'); persons are resolved through identity merges (one level: the survivor
--   of the latest merge that absorbed the journey's person, chosen by time, then id,
--   never arbitrarily). conversions sums to the converted journeys. top_first_channels and
--   top_last_channels are the three channels that open (close) most of the type's
--   conversions, counted exactly, ties by name (topK was approximate and broke ties
--   arbitrarily).
-- FINAL: needed on journeys (ReplacingMergeTree by version) and identity_merges.
WITH
    merged AS
    (
        SELECT absorbed_person_id AS old_id, argMax(person_id, (at, person_id)) AS new_id
        FROM journeys.identity_merges FINAL
        WHERE kind = 'MERGE'
        GROUP BY old_id
    ),
    conv AS
    (
        SELECT
            if(m.new_id != '', m.new_id, j.person_id) AS person,
            j.ended_at AS converted_at,
            j.revenue AS order_revenue,
            j.touch_count AS touch_count,
            j.days_to_convert AS days,
            j.path AS path,
            row_number() OVER (PARTITION BY person ORDER BY converted_at, j.journey_id) AS nth
        FROM journeys.journeys AS j FINAL
        LEFT JOIN merged AS m ON m.old_id = j.person_id
        WHERE j.converted
    )
SELECT
    if(nth = 1, 'new', 'returning') AS customer,
    count() AS conversions,
    uniqExact(person) AS persons,
    round(100 * conversions / sum(conversions) OVER (), 1) AS pct,
    round(sum(order_revenue), 2) AS revenue,
    round(avg(order_revenue), 2) AS avg_order_value,
    round(avg(touch_count), 2) AS avg_touches,
    round(avg(days), 2) AS avg_days_to_convert,
    arrayStringConcat(arraySlice(arraySort((c, n) -> (-n, c),
        mapKeys(sumMap(map(path[1], toUInt64(1)))),
        mapValues(sumMap(map(path[1], toUInt64(1))))), 1, 3), ', ') AS top_first_channels,
    arrayStringConcat(arraySlice(arraySort((c, n) -> (-n, c),
        mapKeys(sumMap(map(path[-1], toUInt64(1)))),
        mapValues(sumMap(map(path[-1], toUInt64(1))))), 1, 3), ', ') AS top_last_channels
FROM conv
WHERE toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
GROUP BY customer
ORDER BY customer
