-- Grafana annotation query (ClickHouse datasource, "Annotations" with this SQL): one
-- annotation region per anomaly in the dashboard's time range; open ones run to now.
SELECT
    `start` AS time,
    if(status = 'open', now(), `end`) AS timeEnd,
    concat('[', severity, '] ', detector, ' ', entity, ': ', metric, ' ', toString(round(observed, 4)),
           ' vs expected ', toString(round(expected, 4)), ' (score ', toString(round(score, 2)), ', ', status, ')') AS text,
    arrayFilter(x -> x != '', [detector, severity, status]) AS tags
FROM genops_anomalies FINAL
WHERE `end` >= $__fromTime AND `start` <= $__toTime
ORDER BY time
