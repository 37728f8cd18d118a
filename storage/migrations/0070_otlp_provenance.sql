-- Provenance of OTLP spans: a span received over OTLP never counts as recorded by GenOps
-- itself. Instrumentation scope names starting with "genops." are reserved for GenOps's own
-- recorders (genops.proxy marks the proxy's calls in genops_calls, genops.demo the demo
-- traffic); the receiver stores such a scope as "otlp:<name>" on every decode path. The
-- Python decoders do it in collectors/otlp.py (received_scope_name); this replaces the query
-- of migration 0060's view so that SpanRows ClickHouse decodes (including batches spooled
-- before this migration) are renamed alike. Everything else is 0060's query unchanged.
-- The view is dropped and created again rather than changed with ALTER ... MODIFY QUERY: after
-- MODIFY QUERY, a batch retried with the same deduplication token (a timed-out insert that did
-- land) was stored twice (tests/test_export_faults.py). Migrations run before anything is
-- ingested, so no insert falls between the two statements.
DROP VIEW IF EXISTS {database}.otel_traces_otlp_in_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_traces_otlp_in_mv
TO {database}.otel_traces
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
FROM {database}.otel_traces_otlp_in
WHERE throwIf(
    arrayExists(a ->
        arrayUniq(a.key) != length(a)
        OR arrayExists(d -> match(d, '[en]|^-?0\\.0000|^-0$|^-?[0-9]{{16}}'), a.value.double_value)
        OR arrayExists(ts -> arrayUniq(ts) > 1 OR arrayExists(t -> t NOT IN (1, 2, 3), ts), a.value.array_value.values.value)
        OR arrayExists(ts -> arrayExists(t -> t != 1, ts), a.value.kvlist_value.values.value.value)
        OR arrayExists(k -> arrayUniq(k) != length(k), a.value.kvlist_value.values.key)
        OR arrayExists(s -> match(s, '[\x0b\x0e\x0f\x1a-\x1f]|\xe2\x80\xa8|\xe2\x80\xa9'),
            arrayConcat(arrayFlatten(a.value.array_value.values.string_value), arrayFlatten(a.value.kvlist_value.values.key),
                        arrayFlatten(a.value.kvlist_value.values.value.string_value))),
        arrayConcat([attributes], events.attributes, links.attributes)),
    'OTLP_SQL_FALLBACK: a value in this batch is stored through the Python decoder') = 0;
