-- Question: What is one customer's profile, and which segments are they in, found by any
--   of their identifiers?
-- Parameters:
--   email         String  = (none)  an e-mail address (hashed here as the connectors do:
--                                   trimmed, lower-cased, SHA-256)
--   phone         String  = (none)  a phone number in E.164 form (+15017250604)
--   user_id       String  = (none)  the retailer's customer id
--   loyalty_id    String  = (none)  a loyalty card number
--   anonymous_id  String  = (none)  a web or app anonymous id
--   person_id     String  = (none)  Journeys' person id
-- Grain: one row per person matched (one, unless the identifiers given name several;
--   with no identifier at all, the customer with the most revenue, as an example).
--   current_segments lists (segment, entered_at) of the memberships open now.
-- FINAL: needed on identities, persons and segment_membership.
WITH
    wanted AS
    (
        SELECT DISTINCT person_id
        FROM journeys.identities FINAL
        WHERE (identifier_type = 'email_sha256'
               AND identifier_value = lower(hex(SHA256(lower(trimBoth({email:String}))))))
           OR (identifier_type = 'phone_sha256'
               AND identifier_value = lower(hex(SHA256(trimBoth({phone:String})))))
           OR (identifier_type = 'user_id' AND identifier_value = {user_id:String})
           OR (identifier_type = 'loyalty_id' AND identifier_value = {loyalty_id:String})
           OR (identifier_type = 'anonymous_id' AND identifier_value = {anonymous_id:String})
        UNION DISTINCT
        SELECT {person_id:String}
        UNION DISTINCT
        SELECT person_id FROM
        (
            -- no identifier given: the customer with the most revenue, as an example
            SELECT person_id FROM journeys.persons FINAL
            WHERE {email:String} = '(none)' AND {phone:String} = '(none)'
              AND {user_id:String} = '(none)' AND {loyalty_id:String} = '(none)'
              AND {anonymous_id:String} = '(none)' AND {person_id:String} = '(none)'
            ORDER BY revenue DESC, person_id
            LIMIT 1
        )
    ),
    segments AS
    (
        SELECT person_id, arraySort(groupArray((segment, entered_at))) AS current_segments
        FROM journeys.segment_membership FINAL
        WHERE is_member = 1 AND person_id IN (SELECT person_id FROM wanted)
        GROUP BY person_id
    )
SELECT
    p.person_id AS person_id,
    p.lifecycle_stage AS lifecycle_stage,
    s.current_segments AS current_segments,
    p.first_seen AS first_seen,
    p.last_seen AS last_seen,
    p.orders AS orders,
    p.revenue AS revenue,
    p.average_order_value AS average_order_value,
    p.purchase_frequency AS orders_per_30_days,
    p.mean_days_between_orders AS mean_days_between_orders,
    p.last_purchase AS last_purchase,
    p.preferred_channel AS preferred_channel,
    p.channels AS channels,
    p.devices AS devices,
    p.app_user AS app_user,
    p.cart_items AS cart_items,
    p.cart_value AS cart_value,
    p.cart_since AS cart_since,
    p.email_opens AS email_opens,
    p.email_clicks AS email_clicks,
    p.sms_clicks AS sms_clicks,
    p.store_visits AS store_visits,
    p.qr_scans AS qr_scans,
    p.wifi_logins AS wifi_logins,
    p.bopis_orders AS bopis_orders
FROM journeys.persons AS p FINAL
LEFT JOIN segments AS s ON s.person_id = p.person_id
WHERE p.person_id IN (SELECT person_id FROM wanted)
