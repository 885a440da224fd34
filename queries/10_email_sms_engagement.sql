-- Question: How do e-mail and SMS engagement (deliveries, opens, clicks) lead to
--   conversions?
-- Parameters:
--   since        Date    = 1970-01-01  first event day included (UTC)
--   until        Date    = 2100-01-01  first event day excluded (UTC)
--   window_days  UInt32  = 7           a conversion this long after a person's first click
--                                      counts as converted after clicking
-- Grain: one row per messaging channel (email, sms). Message counts (delivered, opens,
--   clicks) come from the SendGrid and Twilio events; the person funnel counts persons
--   (after identity merges: the survivor of the latest merge that absorbed the event's
--   person, chosen by time, then id, never arbitrarily) who were delivered, opened,
--   clicked, and converted within window_days of their first click; linear_conversions
--   and last_touch_conversions are the credit the channel earns (opens and deliveries
--   are not touches, clicks are).
-- FINAL: needed on messaging_events (migration 0012: touchpoints' SendGrid and Twilio
--   rows, six columns, ordered by event_id), which keeps each event's newest row as
--   touchpoints FINAL would, merging 3M narrow rows instead of reading 10M event ids;
--   journeys and identity_merges with FINAL (ReplacingMergeTree: at-least-once delivery
--   leaves duplicates until merges); the credit from daily_channel_credit (refreshed by
--   the sink every minute: exact, at most a minute behind; attribution_current gives the
--   live figures, 0.5 s more at a year of data).
-- One pass: persons are compared by their 64-bit hash (a collision between two of a
--   year's million persons has a chance of about 1 in 10^7), and each person's events
--   and conversions meet in one GROUP BY (channel, person), conversions copied to both
--   channels, instead of a join of 1.5M funnels with 200k converting persons.
WITH
    merged AS
    (
        SELECT
            cityHash64(absorbed_person_id) AS old_id,
            cityHash64(argMax(person_id, (at, person_id))) AS new_id
        FROM journeys.identity_merges FINAL
        WHERE kind = 'MERGE'
        GROUP BY absorbed_person_id
    ),
    person_events AS
    (
        SELECT
            e.e_channel AS channel,
            if(m.new_id != 0, m.new_id, e.e_person) AS person,
            e.e_type AS event_type,
            e.e_at AS at
        FROM
        (
            SELECT
                channel AS e_channel,
                cityHash64(person_id) AS e_person,
                event_type AS e_type,
                occurred_at AS e_at
            FROM journeys.messaging_events FINAL
            WHERE toDate(occurred_at) >= {since:Date} AND toDate(occurred_at) < {until:Date}
            UNION ALL
            SELECT
                arrayJoin(['email', 'sms']) AS e_channel,
                cityHash64(person_id) AS e_person,
                'conversion' AS e_type,
                ended_at AS e_at
            FROM journeys.journeys FINAL
            WHERE converted
        ) AS e
        LEFT JOIN merged AS m ON m.old_id = e.e_person
    ),
    per_person AS
    (
        SELECT
            channel,
            countIf(event_type IN ('email_delivered', 'sms_delivered')) AS delivered,
            countIf(event_type = 'email_open') AS opens,
            countIf(event_type IN ('email_click', 'sms_click')) AS clicks,
            minIf(at, event_type IN ('email_click', 'sms_click')) AS first_click,
            groupArrayIf(at, event_type = 'conversion') AS conversion_times
        FROM person_events
        GROUP BY channel, person
        HAVING countIf(event_type != 'conversion') > 0
    ),
    funnel AS
    (
        SELECT
            p.channel AS channel,
            sum(p.delivered) AS delivered,
            sum(p.opens) AS opens,
            sum(p.clicks) AS clicks,
            countIf(p.delivered > 0) AS persons_delivered,
            countIf(p.opens > 0) AS persons_opened,
            countIf(p.clicks > 0) AS persons_clicked,
            countIf(p.clicks > 0 AND arrayExists(
                x -> x >= p.first_click AND x <= p.first_click + toIntervalDay({window_days:UInt32}),
                p.conversion_times)) AS persons_converted_after_click
        FROM per_person AS p
        GROUP BY channel
    ),
    credit AS
    (
        SELECT
            channel,
            sumIf(conversions, model = 'linear') AS linear_conversions,
            sumIf(conversions, model = 'last_touch') AS last_touch_conversions,
            sumIf(revenue, model = 'linear') AS linear_revenue
        FROM journeys.daily_channel_credit
        WHERE channel IN ('email', 'sms') AND day >= {since:Date} AND day < {until:Date}
        GROUP BY channel
    )
SELECT
    f.channel AS channel,
    f.delivered AS delivered,
    f.opens AS opens,
    f.clicks AS clicks,
    round(100 * f.clicks / nullIf(f.delivered, 0), 1) AS click_rate_pct,
    f.persons_delivered AS persons_delivered,
    f.persons_opened AS persons_opened,
    f.persons_clicked AS persons_clicked,
    f.persons_converted_after_click AS persons_converted_after_click,
    round(100 * f.persons_converted_after_click / nullIf(f.persons_clicked, 0), 1)
        AS click_to_conversion_pct,
    round(cr.linear_conversions, 2) AS linear_conversions,
    round(cr.last_touch_conversions, 2) AS last_touch_conversions,
    round(cr.linear_revenue, 2) AS linear_revenue
FROM funnel AS f
LEFT JOIN credit AS cr ON cr.channel = f.channel
ORDER BY f.channel
