-- Anomalies still open (latest version of each row).
SELECT detector, entity, toUnixTimestamp(`start`) AS start_ts, toUnixTimestamp(`end`) AS end_ts,
       observed, expected, score, severity, status, metric, unit, details,
       toUnixTimestamp(notified_at) AS notified_ts, toUnixTimestamp(resolved_notified_at) AS resolved_notified_ts
FROM {database}.genops_anomalies FINAL
WHERE status = 'open'
