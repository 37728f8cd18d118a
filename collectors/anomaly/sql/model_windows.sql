-- Sliding windows per provider/model from the per-minute rollup: one row per entity and
-- window end t (every {step} minutes, each window {window} minutes long). Each minute row
-- is repeated into the {window}/{step} windows that contain it (ARRAY JOIN), so the
-- t-digest states merge into a true windowed p95 rather than an average of per-minute p95s.
-- {minute_filter} narrows the read to the slices a live pass needs (or is 1).
SELECT
    concat(Provider, '/', RequestModel) AS entity,
    toUnixTimestamp(toStartOfInterval(Minute, toIntervalMinute({step})) + toIntervalMinute({step} * (k + 1))) AS t,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(RateLimited) AS rate_limited,
    sum(OkCalls) AS ok_calls,
    quantilesTDigestMerge(0.5, 0.95)(LatencyState)[2] AS latency_p95,
    sum(TtftCalls) AS ttft_calls,
    quantilesTDigestMerge(0.5, 0.95)(TtftState)[2] AS ttft_p95,
    sum(ModelMismatches) AS mismatches,
    anyLastIf(MismatchModel, MismatchModel != '') AS mismatch_model
FROM {database}.genops_rollup_model_1m
ARRAY JOIN range(intDiv({window}, {step})) AS k
WHERE Minute >= toDateTime({from_ts}) - toIntervalMinute({window}) AND Minute < toDateTime({to_ts})
  AND ({minute_filter})
GROUP BY entity, t
HAVING t > {from_ts} AND t <= {to_ts}
ORDER BY entity, t
