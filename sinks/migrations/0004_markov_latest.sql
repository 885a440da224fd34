-- 0004: Markov credit of every converted journey under the latest snapshot.
--
-- The stream credits each conversion with the snapshot it holds at that moment: the
-- bootstrap (linear) before the first snapshot reaches it, an older one after. This
-- view recomputes the credit of every converted journey, at query time, with the
-- newest markov snapshot, the way the stream applies a snapshot: the weights of the
-- path's distinct channels, normalised over those channels (linear when they are all
-- 0). Credits of one conversion sum to 1, revenue credits to its revenue.

CREATE VIEW IF NOT EXISTS {db}.markov_credit_latest AS
WITH
    (
        SELECT argMax(version, computed_at) FROM {db}.attribution_models WHERE model = 'markov'
    ) AS latest,
    (
        SELECT CAST((groupArray(channel), groupArray(weight)), 'Map(String, Float64)')
        FROM {db}.attribution_models
        WHERE model = 'markov' AND version = latest
    ) AS weights
SELECT
    conversion_event_id,
    journey_id,
    person_id,
    ended_at AS converted_at,
    latest AS model_version,
    channel,
    if(total > 0, weights[channel] / total, countEqual(path, channel) / length(path)) AS credit,
    credit * revenue AS revenue_credit
FROM
(
    SELECT
        conversion_event_id, journey_id, person_id, ended_at, revenue, path,
        arrayDistinct(path) AS channels,
        arraySum(arrayMap(c -> weights[c], arrayDistinct(path))) AS total
    FROM {db}.journeys FINAL
    WHERE converted AND length(path) > 0
)
ARRAY JOIN channels AS channel;
