-- Anomalies found by the jobs (collectors/anomaly). An ongoing anomaly is ONE logical row:
-- each update inserts the row again with a higher `version`, and ReplacingMergeTree keeps
-- the latest per (detector, entity, start). ClickHouse rows are immutable, so readers must
-- deduplicate: SELECT ... FROM genops_anomalies FINAL (or the genops_anomalies_latest view).
-- status: 'open' while it lasts (`end` = last minute it was seen), then 'resolved'.
CREATE TABLE IF NOT EXISTS {database}.genops_anomalies (
    detector LowCardinality(String),
    entity String,
    `start` DateTime,
    `end` DateTime,
    observed Float64,
    expected Float64,
    score Float64,
    severity LowCardinality(String),
    status LowCardinality(String),
    metric LowCardinality(String),
    unit LowCardinality(String),
    details String,
    notified_at DateTime DEFAULT toDateTime(0),
    resolved_notified_at DateTime DEFAULT toDateTime(0),
    updated_at DateTime64(3) DEFAULT now64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(`start`)
ORDER BY (detector, entity, `start`);

CREATE VIEW IF NOT EXISTS {database}.genops_anomalies_latest AS
SELECT * FROM {database}.genops_anomalies FINAL;

-- Small key/value state of the jobs (the live loop's watermark).
CREATE TABLE IF NOT EXISTS {database}.genops_jobs_state (
    name String,
    value String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name;
