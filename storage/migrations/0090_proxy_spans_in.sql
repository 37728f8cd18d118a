-- The proxy's own spans spelled by ClickHouse: the store inserts the lines of the proxy's compact
-- batches (storage/span_batch.py) FORMAT JSONCompactEachRow into this Null table, with every
-- attribute value read as its JSON text (input_format_json_read_{numbers,bools,arrays,objects}_as_strings,
-- storage/span_batch_sql.py), and the view spells each line into otel_traces exactly as the
-- Python spelling (span_batch.compact_rows) does. A float is the one value whose JSON text is
-- not its stored spelling: JSON (orjson) writes 8000.0 and 8.4e-6 where the store keeps 8000
-- and 8.4e-06 (storage/rows.py float_string). Each line names its float-valued attributes
-- beside them (floats, event_floats, link_floats): an empty spelling means the view mends
-- JSON's text (drops a whole number's ".0", pads a one-digit exponent), any other is the
-- stored spelling itself, for the few floats JSON writes otherwise (zero's sign, 1e-5 to 1e-4,
-- whole numbers from 1e16 to 1e21). The attributes keep their order. Columns follow a line's
-- values by position; origin_index (the batch header's numbering) is not needed here: each
-- line carries its own origin. Times past 2262-04-11 are clamped like storage/rows.py ts64.
-- A line the table cannot read (a batch spooled before these values existed) fails the insert
-- before anything is written, and the store spells that group in Python with the same token.
CREATE TABLE IF NOT EXISTS {database}.otel_traces_genops_in (
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_traces_genops_in_mv
TO {database}.otel_traces
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
FROM {database}.otel_traces_genops_in;
