-- What a normal session does in one {step}-minute bucket, hour by hour: the 99th percentile
-- of calls and of spend per active session. The runaway detector's baseline.
SELECT
    toUnixTimestamp(toStartOfHour(b)) AS hour,
    count() AS sessions,
    quantileExact(0.99)(calls) AS calls_p99,
    quantileExact(0.99)(cost_usd) AS cost_p99
FROM (
    SELECT SessionId, toStartOfInterval(Minute, toIntervalMinute({step})) AS b, sum(Calls) AS calls, sum(CostUsd) AS cost_usd
    FROM {database}.genops_rollup_session_1m
    WHERE Minute >= toDateTime({from_ts}) AND Minute < toDateTime({to_ts})
    GROUP BY SessionId, b
)
GROUP BY hour
ORDER BY hour
