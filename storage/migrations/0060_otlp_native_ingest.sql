-- OTLP protobuf ingest decoded by ClickHouse: the receiver inserts one SpanRow per span
-- (storage/otlp_span_row.proto: the span's own bytes from the request plus its resource and
-- scope) FORMAT Protobuf into this Null table; the view spells each row for otel_traces
-- exactly as the Python decoder (collectors/otlp.py) does: attribute values as strings
-- (bool true/false, int decimal, double like Python repr, bytes base64, arrays and key-value
-- lists as orjson writes them), SpanKind/StatusCode names, ids in lower-case hex, times
-- past 2262-04-11 clamped to the last DateTime64(9) instant like storage/rows.py ts64.
-- What the SQL cannot spell the same way (a double outside 1e-4..1e15, arrays that mix types
-- or hold doubles, nested collections, duplicate keys, JSON-escaping differences) raises
-- OTLP_SQL_FALLBACK before anything is written; the sender then stores
-- that batch through the Python decoder with the same deduplication token. Oneof presence
-- (input_format_protobuf_oneof_presence): 0 unset, 1 string, 2 bool, 3 int, 4 double,
-- 5 array, 6 kvlist, 7 bytes; ints, bools and doubles arrive as text (the Protobuf reader
-- converts them). Rows with malformed ids never get here (the receiver drops them).
CREATE TABLE IF NOT EXISTS {database}.otel_traces_otlp_in (
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
