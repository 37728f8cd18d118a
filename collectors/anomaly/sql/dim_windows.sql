-- Sliding windows per dimension value (service=..., user=..., property.<name>=...) from
-- genops_rollup_dim_1m, restricted by {dimension_filter}; see model_windows.sql.
SELECT
    concat(Dimension, '=', Value) AS entity,
    toUnixTimestamp(toStartOfInterval(Minute, toIntervalMinute({step})) + toIntervalMinute({step} * (k + 1))) AS t,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(Tokens) AS tokens,
    sum(CostUsd) AS cost_usd,
    sum(SafetyFindings) AS safety_findings
FROM {database}.genops_rollup_dim_1m
ARRAY JOIN range(intDiv({window}, {step})) AS k
WHERE ({dimension_filter})
  AND Minute >= toDateTime({from_ts}) - toIntervalMinute({window}) AND Minute < toDateTime({to_ts})
  AND ({minute_filter})
GROUP BY entity, t
HAVING t > {from_ts} AND t <= {to_ts}
ORDER BY entity, t
