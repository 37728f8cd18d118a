-- How strongly each entity follows a daily cycle, from ClickHouse's own STL decomposition:
-- hourly calls over the week before {to_ts} (hours without calls count as 0) go through
-- seriesDecomposeSTL(series, 24) -> [seasonal, trend, residue, baseline], and
-- strength = 1 - Var(residue) / Var(seasonal + residue) (Wang, Smith & Hyndman 2006).
-- Near 1: a clear daily cycle; near 0: none worth modelling.
SELECT
    entity,
    active_hours,
    first_hour,
    1 - arrayReduce('varPop', parts[3]) / greatest(arrayReduce('varPop', arrayMap((s, r) -> s + r, parts[1], parts[3])), 1e-9) AS strength
FROM (
    SELECT
        entity,
        length(idxs) AS active_hours,
        arrayMin(idxs) AS first_hour,
        seriesDecomposeSTL(arrayMap(k -> if(has(idxs, k), vals[indexOf(idxs, k)], 0), range({hours})), 24) AS parts
    FROM (
        SELECT entity, groupArray(idx) AS idxs, groupArray(v) AS vals
        FROM (
            SELECT concat(Dimension, '=', Value) AS entity,
                   toUInt64(intDiv(toUnixTimestamp(Minute) - {from_ts}, 3600)) AS idx,
                   toFloat64(sum(Calls)) AS v
            FROM {database}.genops_rollup_dim_1m
            WHERE ({dimension_filter}) AND Minute >= toDateTime({from_ts}) AND Minute < toDateTime({to_ts})
            GROUP BY entity, idx
        )
        GROUP BY entity
    )
)
