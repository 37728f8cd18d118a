-- What prompt caching saved, per call: the cached input tokens priced at the model's
-- uncached input price minus what they cost (the proxy records genops.cost.cache_savings_usd
-- when a call read from the provider's cache). Parsed once at insert time so the Cost
-- dashboard sums a typed column; its columns match genops_calls' so the same filters apply.
CREATE TABLE IF NOT EXISTS {database}.genops_cache_savings (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String),
    Operation LowCardinality(String),
    Provider LowCardinality(String),
    RequestModel LowCardinality(String),
    UserId String CODEC(ZSTD(1)),
    CacheReadTokens UInt64,
    SavingsUsd Float64
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Provider, RequestModel, toStartOfMinute(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay({retention_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.genops_cache_savings_mv
TO {database}.genops_cache_savings
AS SELECT
    Timestamp,
    TraceId,
    SpanId,
    ServiceName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'], SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['genops.user.id'] AS UserId,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadTokens,
    toFloat64OrZero(SpanAttributes['genops.cost.cache_savings_usd']) AS SavingsUsd
FROM {database}.otel_traces
WHERE mapContains(SpanAttributes, 'genops.cost.cache_savings_usd');
