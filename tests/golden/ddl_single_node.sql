-- GenOps schema: every statement `genops migrate` runs on a new store, in order
-- (database genops, retention 30 days, single node).

-- ledger
CREATE DATABASE IF NOT EXISTS genops;
CREATE TABLE IF NOT EXISTS genops.genops_schema_migrations (
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3) DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY version;

-- 0001_otel_traces
CREATE TABLE IF NOT EXISTS genops.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- 0002_otel_traces_trace_id_ts
CREATE TABLE IF NOT EXISTS genops.otel_traces_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
TTL toDateTime(Start) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.otel_traces_trace_id_ts_mv
TO genops.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(toDateTime(Timestamp)) AS Start,
    max(toDateTime(Timestamp)) AS End
FROM genops.otel_traces
WHERE TraceId != ''
GROUP BY TraceId;

-- 0003_genops_calls
CREATE TABLE IF NOT EXISTS genops.genops_calls (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String),
    ScopeName LowCardinality(String),
    SpanName LowCardinality(String),
    Operation LowCardinality(String),
    Provider LowCardinality(String),
    RequestModel LowCardinality(String),
    ResponseModel LowCardinality(String),
    Stream UInt8,
    StatusCode LowCardinality(String),
    ErrorType LowCardinality(String),
    HttpStatus UInt16,
    Duration UInt64 CODEC(T64, ZSTD(1)),
    InputTokens UInt64,
    OutputTokens UInt64,
    CacheReadTokens UInt64,
    CacheWriteTokens UInt64,
    ReasoningTokens UInt64,
    TokensEstimated UInt8,
    CostUsd Nullable(Float64),
    CostKnown UInt8,
    TtftMs Nullable(Float64),
    OutputTokensPerSecond Nullable(Float64),
    RequestId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    SessionId String CODEC(ZSTD(1)),
    SessionPath String CODEC(ZSTD(1)),
    AgentName LowCardinality(String),
    PromptId LowCardinality(String),
    PromptVersion LowCardinality(String),
    Properties Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    SafetyPii UInt32,
    SafetySecrets UInt32,
    SafetyInjection UInt32,
    SafetyAction LowCardinality(String),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_request_id RequestId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_session_id SessionId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_user_id UserId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Provider, RequestModel, toStartOfMinute(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_calls_mv
TO genops.genops_calls
AS SELECT
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ServiceName,
    ScopeName,
    SpanName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'], SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['gen_ai.response.model'] AS ResponseModel,
    SpanAttributes['gen_ai.request.stream'] = 'true' AS Stream,
    StatusCode,
    SpanAttributes['error.type'] AS ErrorType,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS HttpStatus,
    Duration,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) AS InputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_creation.input_tokens']) AS CacheWriteTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.reasoning.output_tokens']) AS ReasoningTokens,
    SpanAttributes['genops.usage.estimated'] = 'true' AS TokensEstimated,
    toFloat64OrNull(SpanAttributes['genops.cost.usd']) AS CostUsd,
    mapContains(SpanAttributes, 'genops.cost.usd') AS CostKnown,
    toFloat64OrNull(SpanAttributes['genops.latency.ttft_ms']) AS TtftMs,
    toFloat64OrNull(SpanAttributes['genops.latency.output_tokens_per_second']) AS OutputTokensPerSecond,
    SpanAttributes['genops.request.id'] AS RequestId,
    SpanAttributes['genops.user.id'] AS UserId,
    SpanAttributes['gen_ai.conversation.id'] AS SessionId,
    SpanAttributes['genops.session.path'] AS SessionPath,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    SpanAttributes['genops.prompt.id'] AS PromptId,
    SpanAttributes['genops.prompt.version'] AS PromptVersion,
    mapApply((k, v) -> (substring(k, 17), v), mapFilter((k, v) -> startsWith(k, 'genops.property.'), SpanAttributes)) AS Properties,
    toUInt32OrZero(SpanAttributes['genops.safety.pii.count']) AS SafetyPii,
    toUInt32OrZero(SpanAttributes['genops.safety.secrets.count']) AS SafetySecrets,
    toUInt32OrZero(SpanAttributes['genops.safety.injection.count']) AS SafetyInjection,
    SpanAttributes['genops.safety.action'] AS SafetyAction
FROM genops.otel_traces
WHERE SpanAttributes['gen_ai.operation.name'] != '';

-- 0010_insert_deduplication
ALTER TABLE genops.otel_traces MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE genops.genops_calls MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE genops.otel_traces_trace_id_ts MODIFY SETTING non_replicated_deduplication_window = 1000;

-- 0030_anomaly_rollups
CREATE TABLE IF NOT EXISTS genops.genops_rollup_model_1m (
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    Provider LowCardinality(String),
    RequestModel LowCardinality(String),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    RateLimited SimpleAggregateFunction(sum, UInt64),
    OkCalls SimpleAggregateFunction(sum, UInt64),
    LatencyState AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    TtftCalls SimpleAggregateFunction(sum, UInt64),
    TtftState AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Float64),
    SafetyFindings SimpleAggregateFunction(sum, UInt64),
    ModelMismatches SimpleAggregateFunction(sum, UInt64),
    MismatchModel SimpleAggregateFunction(anyLast, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(Minute)
ORDER BY (Provider, RequestModel, ServiceName, Minute)
TTL Minute + toIntervalDay(30)
SETTINGS ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_rollup_model_1m_mv
TO genops.genops_rollup_model_1m
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName,
    Provider,
    RequestModel,
    count() AS Calls,
    countIf(StatusCode = 'Error' AND HttpStatus != 429) AS Errors,
    countIf(HttpStatus = 429) AS RateLimited,
    countIf(StatusCode != 'Error') AS OkCalls,
    quantilesTDigestStateIf(0.5, 0.95)(Duration / 1e6, StatusCode != 'Error') AS LatencyState,
    countIf(TtftMs IS NOT NULL) AS TtftCalls,
    quantilesTDigestStateIf(0.5, 0.95)(ifNull(TtftMs, 0), TtftMs IS NOT NULL) AS TtftState,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(ifNull(CostUsd, 0)) AS CostUsd,
    sum(SafetyPii + SafetySecrets + SafetyInjection) AS SafetyFindings,
    countIf(ResponseModel != '' AND NOT match(replaceOne(ResponseModel, 'models/', ''), concat('^', regexpQuoteMeta(replaceOne(RequestModel, 'models/', '')), '(-[0-9][0-9-]*|@.*|-latest|-v[0-9.:]+)?$'))) AS ModelMismatches,
    anyLastIf(ResponseModel, ResponseModel != '' AND NOT match(replaceOne(ResponseModel, 'models/', ''), concat('^', regexpQuoteMeta(replaceOne(RequestModel, 'models/', '')), '(-[0-9][0-9-]*|@.*|-latest|-v[0-9.:]+)?$'))) AS MismatchModel
FROM genops.genops_calls
GROUP BY Minute, ServiceName, Provider, RequestModel;
CREATE TABLE IF NOT EXISTS genops.genops_rollup_dim_1m (
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    Dimension LowCardinality(String),
    Value String,
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    Tokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Float64),
    SafetyFindings SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(Minute)
ORDER BY (Dimension, Value, Minute)
TTL Minute + toIntervalDay(30)
SETTINGS ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_rollup_dim_1m_mv
TO genops.genops_rollup_dim_1m
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    dim.1 AS Dimension,
    dim.2 AS Value,
    count() AS Calls,
    countIf(StatusCode = 'Error') AS Errors,
    sum(InputTokens + OutputTokens) AS Tokens,
    sum(ifNull(CostUsd, 0)) AS CostUsd,
    sum(SafetyPii + SafetySecrets + SafetyInjection) AS SafetyFindings
FROM genops.genops_calls
ARRAY JOIN arrayConcat(
    [('service', toString(ServiceName))],
    if(UserId != '', [('user', UserId)], []),
    arrayMap((k, v) -> (concat('property.', toString(k)), substring(v, 1, 200)), mapKeys(Properties), mapValues(Properties))
) AS dim
GROUP BY Minute, Dimension, Value;
CREATE TABLE IF NOT EXISTS genops.genops_rollup_session_1m (
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    SessionId String,
    UserId SimpleAggregateFunction(anyLast, String),
    Calls SimpleAggregateFunction(sum, UInt64),
    Tokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Float64),
    Fingerprints AggregateFunction(uniqExact, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(Minute)
ORDER BY (ServiceName, SessionId, Minute)
TTL Minute + toIntervalDay(30)
SETTINGS ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_rollup_session_1m_mv
TO genops.genops_rollup_session_1m
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName,
    SpanAttributes['gen_ai.conversation.id'] AS SessionId,
    anyLast(SpanAttributes['genops.user.id']) AS UserId,
    count() AS Calls,
    sum(toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) + toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens'])) AS Tokens,
    sum(toFloat64OrZero(SpanAttributes['genops.cost.usd'])) AS CostUsd,
    uniqExactState(cityHash64(
        SpanAttributes['gen_ai.request.model'],
        multiIf(
            SpanAttributes['genops.request.fingerprint'] != '', SpanAttributes['genops.request.fingerprint'],
            SpanAttributes['gen_ai.input.messages'] != '', replaceRegexpAll(SpanAttributes['gen_ai.input.messages'], '[0-9]+', '#'),
            SpanAttributes['gen_ai.usage.input_tokens']
        )
    )) AS Fingerprints
FROM genops.otel_traces
WHERE SpanAttributes['gen_ai.operation.name'] != '' AND SpanAttributes['gen_ai.conversation.id'] != ''
GROUP BY Minute, ServiceName, SessionId;

-- 0031_anomalies
CREATE TABLE IF NOT EXISTS genops.genops_anomalies (
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
CREATE VIEW IF NOT EXISTS genops.genops_anomalies_latest AS
SELECT * FROM genops.genops_anomalies FINAL;
CREATE TABLE IF NOT EXISTS genops.genops_jobs_state (
    name String,
    value String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name;

-- 0040_genops_scores
CREATE TABLE IF NOT EXISTS genops.genops_scores (
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
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
CREATE VIEW IF NOT EXISTS genops.genops_scores_latest AS
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
    FROM genops.genops_scores
    GROUP BY RequestId, TraceId, SpanId, Name, Source
);

-- 0050_cache_savings
CREATE TABLE IF NOT EXISTS genops.genops_cache_savings (
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
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_cache_savings_mv
TO genops.genops_cache_savings
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
FROM genops.otel_traces
WHERE mapContains(SpanAttributes, 'genops.cost.cache_savings_usd');

-- 0051_cache_savings_scope
ALTER TABLE genops.genops_cache_savings ADD COLUMN IF NOT EXISTS ScopeName LowCardinality(String) AFTER ServiceName;
ALTER TABLE genops.genops_cache_savings_mv MODIFY QUERY
SELECT
    Timestamp,
    TraceId,
    SpanId,
    ServiceName,
    ScopeName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'], SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['genops.user.id'] AS UserId,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadTokens,
    toFloat64OrZero(SpanAttributes['genops.cost.cache_savings_usd']) AS SavingsUsd
FROM genops.otel_traces
WHERE mapContains(SpanAttributes, 'genops.cost.cache_savings_usd');

-- 0060_otlp_native_ingest
CREATE TABLE IF NOT EXISTS genops.otel_traces_otlp_in (
    trace_id String,
    span_id String,
    trace_state String,
    parent_span_id String,
    name String,
    kind Int32,
    start_time_unix_nano UInt64,
    end_time_unix_nano UInt64,
    attributes Array(Tuple(key String, value Tuple(value UInt8, string_value String, bool_value String,
        int_value String, double_value String,
        array_value Tuple(values Array(Tuple(value UInt8, string_value String, bool_value String, int_value String))),
        kvlist_value Tuple(values Array(Tuple(key String, value Tuple(value UInt8, string_value String)))),
        bytes_value String))),
    events Array(Tuple(time_unix_nano UInt64, name String,
        attributes Array(Tuple(key String, value Tuple(value UInt8, string_value String, bool_value String,
            int_value String, double_value String,
            array_value Tuple(values Array(Tuple(value UInt8, string_value String, bool_value String, int_value String))),
            kvlist_value Tuple(values Array(Tuple(key String, value Tuple(value UInt8, string_value String)))),
            bytes_value String))))),
    links Array(Tuple(trace_id String, span_id String, trace_state String,
        attributes Array(Tuple(key String, value Tuple(value UInt8, string_value String, bool_value String,
            int_value String, double_value String,
            array_value Tuple(values Array(Tuple(value UInt8, string_value String, bool_value String, int_value String))),
            kvlist_value Tuple(values Array(Tuple(key String, value Tuple(value UInt8, string_value String)))),
            bytes_value String))))),
    status Tuple(message String, code Int32),
    resource_attributes Array(Tuple(key String, value String)),
    service_name String,
    scope Tuple(name String, version String)
) ENGINE = Null;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.otel_traces_otlp_in_mv
TO genops.otel_traces
AS SELECT
    fromUnixTimestamp64Nano(toInt64(least(start_time_unix_nano, 9223372036854775807))) AS Timestamp,
    lower(hex(trace_id)) AS TraceId,
    lower(hex(span_id)) AS SpanId,
    if(parent_span_id = repeat('\0', 8), '', lower(hex(parent_span_id))) AS ParentSpanId,
    trace_state AS TraceState,
    name AS SpanName,
    transform(kind, [0, 1, 2, 3, 4, 5], ['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer'], 'Unspecified') AS SpanKind,
    service_name AS ServiceName,
    CAST(mapFromArrays(resource_attributes.key, resource_attributes.value), 'Map(LowCardinality(String), String)') AS ResourceAttributes,
    scope.name AS ScopeName,
    scope.version AS ScopeVersion,
    CAST(mapFromArrays(attributes.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        attributes.value.value, attributes.value.string_value, attributes.value.bool_value, attributes.value.int_value,
        attributes.value.double_value, attributes.value.bytes_value, attributes.value.array_value.values.value,
        attributes.value.array_value.values.string_value, attributes.value.array_value.values.int_value,
        attributes.value.array_value.values.bool_value, attributes.value.kvlist_value.values.key,
        attributes.value.kvlist_value.values.value.string_value)), 'Map(LowCardinality(String), String)') AS SpanAttributes,
    greatest(end_time_unix_nano, start_time_unix_nano) - start_time_unix_nano AS Duration,
    transform(status.code, [0, 1, 2], ['Unset', 'Ok', 'Error'], 'Unset') AS StatusCode,
    status.message AS StatusMessage,
    arrayMap(t -> fromUnixTimestamp64Nano(toInt64(least(t, 9223372036854775807))), events.time_unix_nano) AS `Events.Timestamp`,
    events.name AS `Events.Name`,
    arrayMap(a -> CAST(mapFromArrays(a.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        a.value.value, a.value.string_value, a.value.bool_value, a.value.int_value, a.value.double_value, a.value.bytes_value,
        a.value.array_value.values.value, a.value.array_value.values.string_value, a.value.array_value.values.int_value,
        a.value.array_value.values.bool_value, a.value.kvlist_value.values.key, a.value.kvlist_value.values.value.string_value)),
        'Map(LowCardinality(String), String)'), events.attributes) AS `Events.Attributes`,
    arrayMap(x -> lower(hex(x)), links.trace_id) AS `Links.TraceId`,
    arrayMap(x -> lower(hex(x)), links.span_id) AS `Links.SpanId`,
    links.trace_state AS `Links.TraceState`,
    arrayMap(a -> CAST(mapFromArrays(a.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        a.value.value, a.value.string_value, a.value.bool_value, a.value.int_value, a.value.double_value, a.value.bytes_value,
        a.value.array_value.values.value, a.value.array_value.values.string_value, a.value.array_value.values.int_value,
        a.value.array_value.values.bool_value, a.value.kvlist_value.values.key, a.value.kvlist_value.values.value.string_value)),
        'Map(LowCardinality(String), String)'), links.attributes) AS `Links.Attributes`
FROM genops.otel_traces_otlp_in
WHERE throwIf(
    arrayExists(a ->
        arrayUniq(a.key) != length(a)
        OR arrayExists(d -> match(d, '[en]|^-?0\\.0000|^-0$|^-?[0-9]{16}'), a.value.double_value)
        OR arrayExists(ts -> arrayUniq(ts) > 1 OR arrayExists(t -> t NOT IN (1, 2, 3), ts), a.value.array_value.values.value)
        OR arrayExists(ts -> arrayExists(t -> t != 1, ts), a.value.kvlist_value.values.value.value)
        OR arrayExists(k -> arrayUniq(k) != length(k), a.value.kvlist_value.values.key)
        OR arrayExists(s -> match(s, '[\x0b\x0e\x0f\x1a-\x1f]|\xe2\x80\xa8|\xe2\x80\xa9'),
            arrayConcat(arrayFlatten(a.value.array_value.values.string_value), arrayFlatten(a.value.kvlist_value.values.key),
                        arrayFlatten(a.value.kvlist_value.values.value.string_value))),
        arrayConcat([attributes], events.attributes, links.attributes)),
    'OTLP_SQL_FALLBACK: a value in this batch is stored through the Python decoder') = 0;

-- 0070_otlp_provenance
DROP VIEW IF EXISTS genops.otel_traces_otlp_in_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.otel_traces_otlp_in_mv
TO genops.otel_traces
AS SELECT
    fromUnixTimestamp64Nano(toInt64(least(start_time_unix_nano, 9223372036854775807))) AS Timestamp,
    lower(hex(trace_id)) AS TraceId,
    lower(hex(span_id)) AS SpanId,
    if(parent_span_id = repeat('\0', 8), '', lower(hex(parent_span_id))) AS ParentSpanId,
    trace_state AS TraceState,
    name AS SpanName,
    transform(kind, [0, 1, 2, 3, 4, 5], ['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer'], 'Unspecified') AS SpanKind,
    service_name AS ServiceName,
    CAST(mapFromArrays(resource_attributes.key, resource_attributes.value), 'Map(LowCardinality(String), String)') AS ResourceAttributes,
    if(startsWith(scope.name, 'genops.'), concat('otlp:', scope.name), scope.name) AS ScopeName,
    scope.version AS ScopeVersion,
    CAST(mapFromArrays(attributes.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        attributes.value.value, attributes.value.string_value, attributes.value.bool_value, attributes.value.int_value,
        attributes.value.double_value, attributes.value.bytes_value, attributes.value.array_value.values.value,
        attributes.value.array_value.values.string_value, attributes.value.array_value.values.int_value,
        attributes.value.array_value.values.bool_value, attributes.value.kvlist_value.values.key,
        attributes.value.kvlist_value.values.value.string_value)), 'Map(LowCardinality(String), String)') AS SpanAttributes,
    greatest(end_time_unix_nano, start_time_unix_nano) - start_time_unix_nano AS Duration,
    transform(status.code, [0, 1, 2], ['Unset', 'Ok', 'Error'], 'Unset') AS StatusCode,
    status.message AS StatusMessage,
    arrayMap(t -> fromUnixTimestamp64Nano(toInt64(least(t, 9223372036854775807))), events.time_unix_nano) AS `Events.Timestamp`,
    events.name AS `Events.Name`,
    arrayMap(a -> CAST(mapFromArrays(a.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        a.value.value, a.value.string_value, a.value.bool_value, a.value.int_value, a.value.double_value, a.value.bytes_value,
        a.value.array_value.values.value, a.value.array_value.values.string_value, a.value.array_value.values.int_value,
        a.value.array_value.values.bool_value, a.value.kvlist_value.values.key, a.value.kvlist_value.values.value.string_value)),
        'Map(LowCardinality(String), String)'), events.attributes) AS `Events.Attributes`,
    arrayMap(x -> lower(hex(x)), links.trace_id) AS `Links.TraceId`,
    arrayMap(x -> lower(hex(x)), links.span_id) AS `Links.SpanId`,
    links.trace_state AS `Links.TraceState`,
    arrayMap(a -> CAST(mapFromArrays(a.key, arrayMap((t, s, b, i, d, y, at, ast, ai, ab, kk, ks) -> multiIf(
            t = 1, s, t = 3, i, t = 2, b, t = 4, d, t = 7, base64Encode(y),
            t = 5, multiIf(empty(at), '[]', at[1] = 1, toJSONString(ast), at[1] = 3, concat('[', arrayStringConcat(ai, ','), ']'),
                           concat('[', arrayStringConcat(ab, ','), ']')),
            t = 6, toJSONString(mapFromArrays(kk, ks)), ''),
        a.value.value, a.value.string_value, a.value.bool_value, a.value.int_value, a.value.double_value, a.value.bytes_value,
        a.value.array_value.values.value, a.value.array_value.values.string_value, a.value.array_value.values.int_value,
        a.value.array_value.values.bool_value, a.value.kvlist_value.values.key, a.value.kvlist_value.values.value.string_value)),
        'Map(LowCardinality(String), String)'), links.attributes) AS `Links.Attributes`
FROM genops.otel_traces_otlp_in
WHERE throwIf(
    arrayExists(a ->
        arrayUniq(a.key) != length(a)
        OR arrayExists(d -> match(d, '[en]|^-?0\\.0000|^-0$|^-?[0-9]{16}'), a.value.double_value)
        OR arrayExists(ts -> arrayUniq(ts) > 1 OR arrayExists(t -> t NOT IN (1, 2, 3), ts), a.value.array_value.values.value)
        OR arrayExists(ts -> arrayExists(t -> t != 1, ts), a.value.kvlist_value.values.value.value)
        OR arrayExists(k -> arrayUniq(k) != length(k), a.value.kvlist_value.values.key)
        OR arrayExists(s -> match(s, '[\x0b\x0e\x0f\x1a-\x1f]|\xe2\x80\xa8|\xe2\x80\xa9'),
            arrayConcat(arrayFlatten(a.value.array_value.values.string_value), arrayFlatten(a.value.kvlist_value.values.key),
                        arrayFlatten(a.value.kvlist_value.values.value.string_value))),
        arrayConcat([attributes], events.attributes, links.attributes)),
    'OTLP_SQL_FALLBACK: a value in this batch is stored through the Python decoder') = 0;

-- 0080_routes_and_rollouts
ALTER TABLE genops.genops_calls
    ADD COLUMN IF NOT EXISTS RouteName LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RouteTarget LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RouteAttempt UInt8,
    ADD COLUMN IF NOT EXISTS RouteVariant LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RolloutId String CODEC(ZSTD(1));
DROP VIEW IF EXISTS genops.genops_calls_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.genops_calls_mv
TO genops.genops_calls
AS SELECT
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ServiceName,
    ScopeName,
    SpanName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'], SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['gen_ai.response.model'] AS ResponseModel,
    SpanAttributes['gen_ai.request.stream'] = 'true' AS Stream,
    StatusCode,
    SpanAttributes['error.type'] AS ErrorType,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS HttpStatus,
    Duration,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) AS InputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_creation.input_tokens']) AS CacheWriteTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.reasoning.output_tokens']) AS ReasoningTokens,
    SpanAttributes['genops.usage.estimated'] = 'true' AS TokensEstimated,
    toFloat64OrNull(SpanAttributes['genops.cost.usd']) AS CostUsd,
    mapContains(SpanAttributes, 'genops.cost.usd') AS CostKnown,
    toFloat64OrNull(SpanAttributes['genops.latency.ttft_ms']) AS TtftMs,
    toFloat64OrNull(SpanAttributes['genops.latency.output_tokens_per_second']) AS OutputTokensPerSecond,
    SpanAttributes['genops.request.id'] AS RequestId,
    SpanAttributes['genops.user.id'] AS UserId,
    SpanAttributes['gen_ai.conversation.id'] AS SessionId,
    SpanAttributes['genops.session.path'] AS SessionPath,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    SpanAttributes['genops.prompt.id'] AS PromptId,
    SpanAttributes['genops.prompt.version'] AS PromptVersion,
    mapApply((k, v) -> (substring(k, 17), v), mapFilter((k, v) -> startsWith(k, 'genops.property.'), SpanAttributes)) AS Properties,
    toUInt32OrZero(SpanAttributes['genops.safety.pii.count']) AS SafetyPii,
    toUInt32OrZero(SpanAttributes['genops.safety.secrets.count']) AS SafetySecrets,
    toUInt32OrZero(SpanAttributes['genops.safety.injection.count']) AS SafetyInjection,
    SpanAttributes['genops.safety.action'] AS SafetyAction,
    SpanAttributes['genops.route.name'] AS RouteName,
    SpanAttributes['genops.route.target'] AS RouteTarget,
    toUInt8OrZero(SpanAttributes['genops.route.attempt']) AS RouteAttempt,
    SpanAttributes['genops.route.variant'] AS RouteVariant,
    SpanAttributes['genops.rollout.id'] AS RolloutId
FROM genops.otel_traces
WHERE SpanAttributes['gen_ai.operation.name'] != '';
CREATE TABLE IF NOT EXISTS genops.genops_rollouts (
    Timestamp DateTime64(3),
    RolloutId String,
    Route LowCardinality(String),
    Action LowCardinality(String),
    Step UInt8,
    Percent UInt8,
    Steps Array(UInt8),
    Target String,
    Baseline String,
    IntervalS UInt32,
    MinCalls UInt32,
    Policy String,
    Reason String,
    Gates String,
    Actor LowCardinality(String),
    Host String
) ENGINE = MergeTree
ORDER BY (Route, Timestamp);

-- 0090_proxy_spans_in
CREATE TABLE IF NOT EXISTS genops.otel_traces_genops_in (
    origin_index UInt32,
    start_ns UInt64,
    end_ns UInt64,
    trace_id String,
    span_id String,
    parent_span_id String,
    trace_state String,
    name String,
    kind Int8,
    status Int8,
    status_message String,
    attributes Map(String, String),
    events Array(Tuple(String, UInt64, Map(String, String))),
    links Array(Tuple(String, String, String, Map(String, String))),
    origin Tuple(Map(String, String), String, String),
    floats Map(String, String),
    event_floats Array(Map(String, String)),
    link_floats Array(Map(String, String))
) ENGINE = Null;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.otel_traces_genops_in_mv
TO genops.otel_traces
AS SELECT
    fromUnixTimestamp64Nano(toInt64(least(start_ns, 9223372036854775807))) AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_span_id AS ParentSpanId,
    trace_state AS TraceState,
    name AS SpanName,
    transform(kind, [0, 1, 2, 3, 4], ['Internal', 'Server', 'Client', 'Producer', 'Consumer'], 'Internal') AS SpanKind,
    origin.1['service.name'] AS ServiceName,
    CAST(origin.1, 'Map(LowCardinality(String), String)') AS ResourceAttributes,
    origin.2 AS ScopeName,
    origin.3 AS ScopeVersion,
    CAST(if(empty(floats), attributes, mapApply((k, v) -> (k, if(mapContains(floats, k),
            if(floats[k] = '', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), floats[k]),
            v)), attributes)),
        'Map(LowCardinality(String), String)') AS SpanAttributes,
    if(end_ns > start_ns, end_ns - start_ns, 0) AS Duration,
    transform(status, [0, 1, 2], ['Unset', 'Ok', 'Error'], 'Unset') AS StatusCode,
    status_message AS StatusMessage,
    arrayMap(e -> fromUnixTimestamp64Nano(toInt64(least(e.2, 9223372036854775807))), events) AS `Events.Timestamp`,
    arrayMap(e -> e.1, events) AS `Events.Name`,
    CAST(arrayMap((e, f) -> mapApply((k, v) -> (k, if(mapContains(f, k),
            if(f[k] = '', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), f[k]),
            v)), e.3), events, event_floats),
        'Array(Map(LowCardinality(String), String))') AS `Events.Attributes`,
    arrayMap(l -> l.1, links) AS `Links.TraceId`,
    arrayMap(l -> l.2, links) AS `Links.SpanId`,
    arrayMap(l -> l.3, links) AS `Links.TraceState`,
    CAST(arrayMap((l, f) -> mapApply((k, v) -> (k, if(mapContains(f, k),
            if(f[k] = '', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), f[k]),
            v)), l.4), links, link_floats),
        'Array(Map(LowCardinality(String), String))') AS `Links.Attributes`
FROM genops.otel_traces_genops_in;

-- 0100_proxy_span_float_slots
DROP VIEW IF EXISTS genops.otel_traces_genops_in_mv;
DROP TABLE IF EXISTS genops.otel_traces_genops_in;
CREATE TABLE IF NOT EXISTS genops.otel_traces_genops_in (
    origin_index UInt32,
    start_ns UInt64,
    end_ns UInt64,
    trace_id String,
    span_id String,
    parent_span_id String,
    trace_state String,
    name String,
    kind Int8,
    status Int8,
    status_message String,
    attributes Map(String, String),
    events Array(Tuple(String, UInt64, Map(String, String))),
    links Array(Tuple(String, String, String, Map(String, String))),
    origin Tuple(Map(String, String), String, String),
    floats Map(String, String),
    event_floats Array(Map(String, String)),
    link_floats Array(Map(String, String)),
    float_slots Array(String)
) ENGINE = Null;
CREATE MATERIALIZED VIEW IF NOT EXISTS genops.otel_traces_genops_in_mv
TO genops.otel_traces
AS SELECT
    fromUnixTimestamp64Nano(toInt64(least(start_ns, 9223372036854775807))) AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_span_id AS ParentSpanId,
    trace_state AS TraceState,
    name AS SpanName,
    transform(kind, [0, 1, 2, 3, 4], ['Internal', 'Server', 'Client', 'Producer', 'Consumer'], 'Internal') AS SpanKind,
    origin.1['service.name'] AS ServiceName,
    CAST(origin.1, 'Map(LowCardinality(String), String)') AS ResourceAttributes,
    origin.2 AS ScopeName,
    origin.3 AS ScopeVersion,
    CAST(mapFromArrays(mapKeys(attributes), arrayMap((v, s) -> if(s = '', v,
            if(s = '~', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), s)),
            mapValues(attributes), arrayResize(float_slots, length(mapKeys(attributes)), ''))),
        'Map(LowCardinality(String), String)') AS SpanAttributes,
    if(end_ns > start_ns, end_ns - start_ns, 0) AS Duration,
    transform(status, [0, 1, 2], ['Unset', 'Ok', 'Error'], 'Unset') AS StatusCode,
    status_message AS StatusMessage,
    arrayMap(e -> fromUnixTimestamp64Nano(toInt64(least(e.2, 9223372036854775807))), events) AS `Events.Timestamp`,
    arrayMap(e -> e.1, events) AS `Events.Name`,
    CAST(arrayMap((e, f) -> mapApply((k, v) -> (k, if(mapContains(f, k),
            if(f[k] = '', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), f[k]),
            v)), e.3), events, event_floats),
        'Array(Map(LowCardinality(String), String))') AS `Events.Attributes`,
    arrayMap(l -> l.1, links) AS `Links.TraceId`,
    arrayMap(l -> l.2, links) AS `Links.SpanId`,
    arrayMap(l -> l.3, links) AS `Links.TraceState`,
    CAST(arrayMap((l, f) -> mapApply((k, v) -> (k, if(mapContains(f, k),
            if(f[k] = '', if(endsWith(v, '.0'), substring(v, 1, length(v) - 2), replaceRegexpOne(v, 'e([+-])([0-9])$', 'e\\10\\2')), f[k]),
            v)), l.4), links, link_floats),
        'Array(Map(LowCardinality(String), String))') AS `Links.Attributes`
FROM genops.otel_traces_genops_in;
