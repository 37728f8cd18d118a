-- The first minute the rollups hold (drift detection needs a day of history before it
-- calls a model "new").
SELECT toUnixTimestamp(min(Minute)) AS first FROM {database}.genops_rollup_model_1m
