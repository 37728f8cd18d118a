-- Recent anomalies for `genops jobs list` (unqualified: runs read-only, also through serve).
SELECT detector, entity, `start`, `end`, status, severity, metric, round(observed, 4) AS observed,
       round(expected, 4) AS expected, round(score, 2) AS score
FROM genops_anomalies FINAL
WHERE {status_filter}
ORDER BY `start` DESC
LIMIT {limit}
