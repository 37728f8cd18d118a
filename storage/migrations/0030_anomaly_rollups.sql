-- Per-minute rollups for the anomaly jobs (collectors/anomaly), kept current by
-- materialized views at insert time, so detectors read a few rows per minute and entity
-- instead of raw spans. Quantiles are stored as t-digest states (AggregatingMergeTree):
-- read them with quantilesTDigestMerge(0.5, 0.95)(LatencyState) and GROUP BY.

-- By service, provider and request model: volume, errors, 429s, latency and TTFT
-- quantile states, tokens, cost, safety findings, response-model mismatches.
CREATE TABLE IF NOT EXISTS {database}.genops_rollup_model_1m (
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
TTL Minute + toIntervalDay({retention_days})
SETTINGS ttl_only_drop_parts = 1;

-- Errors exclude 429s (counted apart as RateLimited); latency is over successful calls;
-- a response model that only adds a date/version suffix to the requested one is no mismatch
-- (gpt-4o -> gpt-4o-2024-08-06, claude-sonnet-4 -> claude-sonnet-4-20250514), any other is
-- (gpt-4o -> gpt-4o-mini).
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.genops_rollup_model_1m_mv
TO {database}.genops_rollup_model_1m
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
FROM {database}.genops_calls
GROUP BY Minute, ServiceName, Provider, RequestModel;

-- By one dimension at a time: service, user, and each custom property (property.<name>),
-- for cost/token surges, traffic drops and safety surges per entity.
CREATE TABLE IF NOT EXISTS {database}.genops_rollup_dim_1m (
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
TTL Minute + toIntervalDay({retention_days})
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.genops_rollup_dim_1m_mv
TO {database}.genops_rollup_dim_1m
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    dim.1 AS Dimension,
    dim.2 AS Value,
    count() AS Calls,
    countIf(StatusCode = 'Error') AS Errors,
    sum(InputTokens + OutputTokens) AS Tokens,
    sum(ifNull(CostUsd, 0)) AS CostUsd,
    sum(SafetyPii + SafetySecrets + SafetyInjection) AS SafetyFindings
FROM {database}.genops_calls
ARRAY JOIN arrayConcat(
    [('service', toString(ServiceName))],
    if(UserId != '', [('user', UserId)], []),
    arrayMap((k, v) -> (concat('property.', toString(k)), substring(v, 1, 200)), mapKeys(Properties), mapValues(Properties))
) AS dim
GROUP BY Minute, Dimension, Value;

-- By agent session (gen_ai.conversation.id): call rate, spend and how many distinct call
-- fingerprints it used (a loop repeats few). Read from otel_traces directly because the
-- fingerprint needs attributes genops_calls does not keep: genops.request.fingerprint when
-- a client or the proxy sets one, else the captured input messages with digits masked,
-- else model + exact input token count (a stateless retry loop repeats it, a growing
-- conversation does not).
CREATE TABLE IF NOT EXISTS {database}.genops_rollup_session_1m (
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
TTL Minute + toIntervalDay({retention_days})
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.genops_rollup_session_1m_mv
TO {database}.genops_rollup_session_1m
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
FROM {database}.otel_traces
WHERE SpanAttributes['gen_ai.operation.name'] != '' AND SpanAttributes['gen_ai.conversation.id'] != ''
GROUP BY Minute, ServiceName, SessionId;
