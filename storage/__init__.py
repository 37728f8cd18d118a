"""storage: ClickHouse. The row schema, migrations, the span pipeline (batching, spool, sinks) and
read-only SQL."""
