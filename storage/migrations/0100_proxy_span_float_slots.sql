-- The proxy's span attributes spelled without a lambda per attribute that reads the row's floats
-- map (migration 0090 mended each float found there: that map was copied for every attribute
-- the lambda visited, a third of the view's CPU per span; docs/benchmarks/2026-12-04-per-core-22-reports-and-method.md).
-- A line now ends with float_slots, one entry per attribute in the attributes' order: '' for a value
-- that is not a float (its JSON text is its stored spelling), '~' for a float whose JSON text the view
-- mends (drops a whole number's ".0", pads a one-digit exponent, as 0090 did), any other text is the
-- stored spelling itself. The line's floats map stays empty; the events' and links' floats are named
-- as before. A line without float_slots (spooled before this migration) does not fit the table and
-- its group is spelled in Python (storage/span_batch_sql.py), as 0090's older lines are.
-- The table and its view are created again, not altered: after ADD COLUMN and MODIFY QUERY, an
-- insert that landed just before a ClickHouse server restart was not deduplicated against its
-- retry after it (tests/test_spool_full_outage.py stored 35 spans twice); created anew it is.
DROP VIEW IF EXISTS {database}.otel_traces_genops_in_mv;
DROP TABLE IF EXISTS {database}.otel_traces_genops_in;
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
    link_floats Array(Map(String, String)),
    float_slots Array(String)
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
FROM {database}.otel_traces_genops_in;
