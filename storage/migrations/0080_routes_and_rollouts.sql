-- Gateway routing and canary rollouts (issue #21; docs/routing.md, docs/rollouts.md).
--
-- genops_calls gets the route of each call, from the attributes the router sets on the call's
-- span (src/genops/semconv.py): the route the client named as its model, the target that
-- answered ("provider:model"), the attempt that answered (1-based), and, while a rollout runs on
-- the route, its id and the call's variant ("baseline" | "canary"). A call that named no route
-- has '' and 0. Rows stored before this migration keep the defaults.
-- The view's query is 0003's with the five columns added at the end. The view is dropped and
-- created again, as 0070 does for the view in front of it, rather than changed with ALTER ...
-- MODIFY QUERY: 0070 found retried batches stored twice after MODIFY QUERY, and with MODIFY
-- QUERY here one run of tests/test_export_faults.py found OTLP spans twice in genops_calls
-- (once in otel_traces). Migrations run before this process ingests anything.
ALTER TABLE {database}.genops_calls
    ADD COLUMN IF NOT EXISTS RouteName LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RouteTarget LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RouteAttempt UInt8,
    ADD COLUMN IF NOT EXISTS RouteVariant LowCardinality(String),
    ADD COLUMN IF NOT EXISTS RolloutId String CODEC(ZSTD(1));

DROP VIEW IF EXISTS {database}.genops_calls_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.genops_calls_mv
TO {database}.genops_calls
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
FROM {database}.otel_traces
WHERE SpanAttributes['gen_ai.operation.name'] != '';

-- Canary rollouts' decisions (collectors/rollouts, storage/rollouts.py): one row per decision,
-- append-only, never updated and never expired (no TTL: the record of what was rolled out when).
-- A rollout's state is derived at read time from its rows (storage/rollouts.py), so every proxy
-- and every restart sees the same state. Action: start | advance | promote | rollback; Step is
-- the 0-based index into Steps (the canary's percentages), Percent the canary's share after
-- this decision (0 after a rollback); Target is the canary ("provider:model"), Baseline the
-- route's configured targets at the start, for the record; Policy the gates' margins (JSON),
-- Gates the gate results behind the decision (JSON list); Reason one line (on a rollback, the
-- failed gate's detail); Actor who decided: cli | api | auto (the evaluator); Host where.
CREATE TABLE IF NOT EXISTS {database}.genops_rollouts (
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
