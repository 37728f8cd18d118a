-- The single-trace query Grafana's ClickHouse datasource (OTel mode, trace format) runs for a
-- trace id: the otel_traces_trace_id_ts lookup bounds the time range, then every span of the
-- trace with Grafana's column aliases. {trace_id} is filled in by the test.
WITH '{trace_id}' AS trace_id,
    (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_start,
    (SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_end
SELECT
    "TraceId" AS traceID,
    "SpanId" AS spanID,
    "ParentSpanId" AS parentSpanID,
    "ServiceName" AS serviceName,
    "SpanName" AS operationName,
    "ScopeName" AS instrumentationLibraryName,
    "ScopeVersion" AS instrumentationLibraryVersion,
    multiply(toUnixTimestamp64Nano("Timestamp"), 0.000001) AS startTime,
    multiply("Duration", 0.000001) AS duration,
    arrayMap(key -> map('key', key, 'value', "SpanAttributes"[key]), mapKeys("SpanAttributes")) AS tags,
    arrayMap(key -> map('key', key, 'value', "ResourceAttributes"[key]), mapKeys("ResourceAttributes")) AS serviceTags,
    if("StatusCode" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode,
    arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)),
        arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String,
        timestamp String, fields Array(Map(String, String))), "Events".Name, "Events".Timestamp, "Events".Attributes) AS logs
FROM otel_traces
WHERE traceID = trace_id
    AND "Timestamp" >= trace_start
    AND "Timestamp" <= trace_end
LIMIT 1000
