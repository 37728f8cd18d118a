-- Feedback and evaluation scores, one immutable row per score (POST /genops/v1/feedback).
-- Nothing is updated in place: a new score for the same call and name is a new row, and
-- the view genops_scores_latest picks the latest one per (call or trace, name, source).
-- A row scores one call (RequestId + its TraceId/SpanId) or, with RequestId empty, a whole
-- trace (an agent run). Join to genops_calls on RequestId or to otel_traces on SpanId.
CREATE TABLE IF NOT EXISTS {database}.genops_scores (
    Timestamp DateTime64(6) CODEC(Delta(8), ZSTD(1)),
    ScoreId String CODEC(ZSTD(1)),
    RequestId String CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Name LowCardinality(String),
    DataType LowCardinality(String),
    Value Nullable(Float64),
    Label String CODEC(ZSTD(1)),
    Comment String CODEC(ZSTD(1)),
    Source LowCardinality(String),
    Metadata Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_id SpanId TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (RequestId, Name, Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay({retention_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- The latest score per (call or trace, name, source): later rows win at query time.
-- argMax over a tuple, so a label (Value NULL) is not skipped as a NULL argument.
CREATE VIEW IF NOT EXISTS {database}.genops_scores_latest AS
SELECT
    RequestId,
    TraceId,
    SpanId,
    Name,
    Source,
    latest.1 AS DataType,
    latest.2 AS Value,
    latest.3 AS Label,
    latest.4 AS Comment,
    latest.5 AS ScoreId,
    LatestAt AS Timestamp,
    Versions
FROM (
    SELECT
        RequestId,
        TraceId,
        SpanId,
        Name,
        Source,
        argMax((DataType, Value, Label, Comment, ScoreId), (Timestamp, ScoreId)) AS latest,
        max(Timestamp) AS LatestAt,
        count() AS Versions
    FROM {database}.genops_scores
    GROUP BY RequestId, TraceId, SpanId, Name, Source
);
