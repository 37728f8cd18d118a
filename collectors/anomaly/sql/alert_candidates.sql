-- Rows an alert may be owed for: open and not yet announced (seen within {fresh_s} seconds,
-- so an old backfilled anomaly never pages anyone), or resolved after being announced and
-- not yet announced as resolved.
SELECT detector, entity, toUnixTimestamp(`start`) AS start_ts, toUnixTimestamp(`end`) AS end_ts,
       observed, expected, score, severity, status, metric, unit, details,
       toUnixTimestamp(notified_at) AS notified_ts, toUnixTimestamp(resolved_notified_at) AS resolved_notified_ts
FROM {database}.genops_anomalies FINAL
WHERE (status = 'open' AND notified_at = toDateTime(0) AND `end` >= toDateTime({now_ts}) - {fresh_s})
   OR (status = 'resolved' AND notified_at > toDateTime(0) AND resolved_notified_at = toDateTime(0))
ORDER BY `start`
