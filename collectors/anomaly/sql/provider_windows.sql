-- Sliding windows per provider (429s hit an account, not one model); see model_windows.sql.
SELECT
    Provider AS entity,
    toUnixTimestamp(toStartOfInterval(Minute, toIntervalMinute({step})) + toIntervalMinute({step} * (k + 1))) AS t,
    sum(Calls) AS calls,
    sum(RateLimited) AS rate_limited
FROM {database}.genops_rollup_model_1m
ARRAY JOIN range(intDiv({window}, {step})) AS k
WHERE Minute >= toDateTime({from_ts}) - toIntervalMinute({window}) AND Minute < toDateTime({to_ts})
  AND ({minute_filter})
GROUP BY entity, t
HAVING t > {from_ts} AND t <= {to_ts}
ORDER BY entity, t
