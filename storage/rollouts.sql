-- The canary rollouts' queries (storage/rollouts.py). One query per "-- name:" section.
-- {database} is GenOps's database (an identifier checked by the settings); every other value
-- is bound by ClickHouse ({name:Type}). Times are Unix milliseconds, so no time zone of the
-- server or the driver shifts a window. GLOBAL IN: on a cluster the tables are Distributed,
-- and the subquery is run once rather than on every shard (the same as IN on one node).

-- name: decisions
-- Every decision row of the latest rollout of each route (optionally of one route); a route's
-- latest rollout is its latest start. The rows are folded into a state in Python.
SELECT
    toUnixTimestamp64Milli(Timestamp) AS ts, RolloutId, Route, Action, Step, Percent, Steps, Target, Baseline,
    IntervalS, MinCalls, Policy, Reason, Gates, Actor, Host
FROM {database}.genops_rollouts
WHERE (Route, RolloutId) GLOBAL IN (
    SELECT Route, argMax(RolloutId, (Timestamp, RolloutId))
    FROM {database}.genops_rollouts
    WHERE Action = 'start' AND ({route:String} = '' OR Route = {route:String})
    GROUP BY Route
)
ORDER BY Route, Timestamp, Action

-- name: history
-- The latest decisions of one route, newest first (the caller turns them oldest first).
SELECT
    toUnixTimestamp64Milli(Timestamp) AS ts, RolloutId, Route, Action, Step, Percent, Steps, Target, Baseline,
    IntervalS, MinCalls, Policy, Reason, Gates, Actor, Host
FROM {database}.genops_rollouts
WHERE Route = {route:String}
ORDER BY Timestamp DESC, Action DESC
LIMIT {limit:UInt32}

-- name: arm_calls
-- Per arm of one rollout: calls, errors (failed, or answered only by a retry or fallback), p95 latency, canary calls slower than the baseline's
-- p95, cost per call over the calls whose price is known, calls with a safety finding.
-- quantileExact: two evaluators (two proxies) reading the same rows compute the same numbers.
WITH (
    SELECT quantileExact(0.95)(Duration)
    FROM {database}.genops_calls
    WHERE RolloutId = {rollout_id:String} AND RouteVariant = 'baseline'
      AND Timestamp >= fromUnixTimestamp64Milli({baseline_since:Int64})
      AND Timestamp < fromUnixTimestamp64Milli({until:Int64})
) AS baseline_p95
SELECT
    RouteVariant AS variant,
    count() AS calls,
    -- a call its arm's target did not answer at the first attempt counts as an error even when a
    -- retry or the route's fallback rescued it: a fallback must not hide a failing canary
    countIf(StatusCode = 'Error' OR RouteAttempt > 1) AS errors,
    quantileExact(0.95)(Duration) / 1e6 AS p95_ms,
    countIf(Duration > baseline_p95) AS over_baseline_p95,
    countIf(CostKnown = 1) AS cost_n,
    avgIf(ifNull(CostUsd, 0), CostKnown = 1) AS cost_mean,
    varSampIf(ifNull(CostUsd, 0), CostKnown = 1) AS cost_var,
    countIf(SafetyPii + SafetySecrets + SafetyInjection > 0) AS flagged
FROM {database}.genops_calls
WHERE RolloutId = {rollout_id:String}
  AND Timestamp < fromUnixTimestamp64Milli({until:Int64})
  AND ((RouteVariant = 'canary' AND Timestamp >= fromUnixTimestamp64Milli({canary_since:Int64}))
       OR (RouteVariant = 'baseline' AND Timestamp >= fromUnixTimestamp64Milli({baseline_since:Int64})))
GROUP BY variant

-- name: arm_scores
-- Per arm: the numeric feedback and evaluation scores of its calls (genops_scores, joined on
-- RequestId as migration 0040 says), the latest value per (call, score name, source).
SELECT c.variant AS variant, count() AS score_n, avg(s.v) AS score_mean, varSamp(s.v) AS score_var
FROM (
    SELECT RequestId, Name, Source, argMax(Value, (Timestamp, ScoreId)) AS v
    FROM {database}.genops_scores
    WHERE RequestId != '' AND RequestId GLOBAL IN (
        SELECT RequestId FROM {database}.genops_calls
        WHERE RolloutId = {rollout_id:String} AND RequestId != ''
          AND Timestamp < fromUnixTimestamp64Milli({until:Int64})
          AND Timestamp >= fromUnixTimestamp64Milli(least({canary_since:Int64}, {baseline_since:Int64})))
    GROUP BY RequestId, Name, Source
) AS s
INNER JOIN (
    SELECT RequestId, any(RouteVariant) AS variant
    FROM {database}.genops_calls
    WHERE RolloutId = {rollout_id:String} AND RequestId != ''
      AND Timestamp < fromUnixTimestamp64Milli({until:Int64})
      AND ((RouteVariant = 'canary' AND Timestamp >= fromUnixTimestamp64Milli({canary_since:Int64}))
           OR (RouteVariant = 'baseline' AND Timestamp >= fromUnixTimestamp64Milli({baseline_since:Int64})))
    GROUP BY RequestId
) AS c ON s.RequestId = c.RequestId
WHERE s.v IS NOT NULL
GROUP BY variant
