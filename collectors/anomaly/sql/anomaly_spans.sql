-- Every anomaly's detector, entity and time span (for scoring against injected anomalies).
SELECT detector, entity, toUnixTimestamp(`start`) AS s, toUnixTimestamp(`end`) AS e
FROM {database}.genops_anomalies FINAL
