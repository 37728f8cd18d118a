-- When each (detector, entity) was last announced, within the cooldown (for the cooldown check).
SELECT detector, entity, toUnixTimestamp(max(notified_at)) AS last_ts
FROM {database}.genops_anomalies FINAL
WHERE notified_at >= toDateTime({since_ts})
GROUP BY detector, entity
