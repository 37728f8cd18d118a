-- One value of the jobs' key/value state (latest version).
SELECT argMax(value, version) AS value FROM {database}.genops_jobs_state WHERE name = {key} GROUP BY name
