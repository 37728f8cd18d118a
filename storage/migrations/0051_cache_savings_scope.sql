-- genops_cache_savings gets ScopeName (who recorded the call), so the dashboards' "Recorded by"
-- filter applies to it as it does to genops_calls. The view is changed in place (no gap).
ALTER TABLE {database}.genops_cache_savings ADD COLUMN IF NOT EXISTS ScopeName LowCardinality(String) AFTER ServiceName;

ALTER TABLE {database}.genops_cache_savings_mv MODIFY QUERY
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
FROM {database}.otel_traces
WHERE mapContains(SpanAttributes, 'genops.cost.cache_savings_usd');
