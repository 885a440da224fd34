-- Question: What does the newest Markov model credit to each channel, for every
--   conversion (including those credited before the first snapshot existed)?
-- Parameters:
--   since  Date  = 1970-01-01  first conversion day included (UTC)
--   until  Date  = 2100-01-01  first conversion day excluded (UTC)
-- Grain: one row per channel. conversions is the Markov credit recomputed at query time
--   with the latest snapshot (view markov_credit_latest); streamed is the credit the
--   stream gave with the snapshot it held (attribution_current, bootstrap = linear before
--   the first snapshot). Both columns sum to the converted journeys.
-- FINAL: not needed here: the view reads journeys with FINAL, and attribution_current
--   keeps only the latest version of each conversion.
SELECT
    channel,
    round(sum(m.credit), 3) AS conversions,
    round(sum(m.revenue_credit), 2) AS revenue,
    round(any(s.streamed), 3) AS streamed,
    any(m.model_version) AS model_version
FROM journeys.markov_credit_latest AS m
LEFT JOIN
(
    SELECT channel, sum(credit) AS streamed
    FROM journeys.attribution_current
    WHERE model = 'markov'
      AND toDate(converted_at) >= {since:Date} AND toDate(converted_at) < {until:Date}
    GROUP BY channel
) AS s USING (channel)
WHERE toDate(m.converted_at) >= {since:Date} AND toDate(m.converted_at) < {until:Date}
GROUP BY channel
ORDER BY conversions DESC
