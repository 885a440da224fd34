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
-- FINAL: needed on journeys and identity_merges (ReplacingMergeTree: at-least-once
--   delivery leaves duplicates until merges); attribution is read through
--   attribution_current, which needs none. Touchpoints are deduplicated by hand instead
--   of FINAL, which would read every row's person before filtering: the rows of one
--   event_id differ only in person_id (a touchpoint forwarded to a merge survivor) and
--   the ingestion columns, so the filter may run first, and each event keeps the person
--   of its newest row, as FINAL would.
WITH
    merged AS
    (
        SELECT absorbed_person_id AS old_id, argMax(person_id, (at, person_id)) AS new_id
        FROM journeys.identity_merges FINAL
        WHERE kind = 'MERGE'
        GROUP BY old_id
    ),
    events AS
    (
        SELECT
            t.event_channel AS channel,
            if(m.new_id != '', m.new_id, t.event_person) AS person,
            t.kind AS event_type,
            t.at AS at
        FROM
        (
            SELECT
                event_id,
                min(channel) AS event_channel,
                argMax(person_id, (ingested_at, person_id)) AS event_person,
                min(event_type) AS kind,
                min(occurred_at) AS at
            FROM journeys.touchpoints
            WHERE channel IN ('email', 'sms') AND source IN ('sendgrid', 'twilio')
              AND toDate(occurred_at) >= {since:Date} AND toDate(occurred_at) < {until:Date}
            GROUP BY event_id
        ) AS t
        LEFT JOIN merged AS m ON m.old_id = t.event_person
    ),
    per_person AS
    (
        SELECT
            channel,
            person,
            countIf(event_type IN ('email_delivered', 'sms_delivered')) AS delivered,
            countIf(event_type = 'email_open') AS opens,
            countIf(event_type IN ('email_click', 'sms_click')) AS clicks,
            minIf(at, event_type IN ('email_click', 'sms_click')) AS first_click
        FROM events
        GROUP BY channel, person
    ),
    conversions AS
    (
        SELECT if(m.new_id != '', m.new_id, j.person_id) AS person, groupArray(j.ended_at) AS times
        FROM journeys.journeys AS j FINAL
        LEFT JOIN merged AS m ON m.old_id = j.person_id
        WHERE j.converted
        GROUP BY person
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
                c.times)) AS persons_converted_after_click
        FROM per_person AS p
        LEFT JOIN conversions AS c ON c.person = p.person
        GROUP BY channel
    ),
    credit AS
    (
        SELECT
            channel,
            sumIf(credit, model = 'linear') AS linear_conversions,
            sumIf(credit, model = 'last_touch') AS last_touch_conversions,
            sumIf(revenue_credit, model = 'linear') AS linear_revenue
        FROM journeys.attribution_current
        WHERE channel IN ('email', 'sms')
          AND toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
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
