"""api: GenOps's own HTTP endpoints beside the request path: health and readiness, read-only SQL,
feedback, metrics, the jobs endpoint and internal ingest between processes."""
