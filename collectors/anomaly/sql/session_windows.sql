-- Sliding windows per agent session, only those busy or costly enough to matter ({min_calls}+
-- calls or ${min_cost}+ in the window), so the result stays small however many sessions exist.
SELECT
    concat('session=', SessionId) AS entity,
    toUnixTimestamp(toStartOfInterval(Minute, toIntervalMinute({step})) + toIntervalMinute({step} * (k + 1))) AS t,
    sum(Calls) AS calls,
    sum(CostUsd) AS cost_usd,
    sum(Tokens) AS tokens,
    uniqExactMerge(Fingerprints) AS distinct_calls,
    any(ServiceName) AS service,
    anyLast(UserId) AS user
FROM {database}.genops_rollup_session_1m
ARRAY JOIN range(intDiv({window}, {step})) AS k
WHERE Minute >= toDateTime({from_ts}) - toIntervalMinute({window}) AND Minute < toDateTime({to_ts})
GROUP BY SessionId, t
HAVING t > {from_ts} AND t <= {to_ts} AND (calls >= {min_calls} OR cost_usd >= {min_cost})
ORDER BY entity, t
