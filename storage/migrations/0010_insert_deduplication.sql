-- Exactly-once export: the span pipeline gives every batch an insert_deduplication_token
-- and replays a batch with the same token after a failure or a restart. Non-replicated
-- MergeTree tables only deduplicate within this window of recent blocks, so enable it on
-- otel_traces and on the tables its materialized views fill (the pipeline also sets
-- deduplicate_blocks_in_dependent_materialized_views=1). A table added later that a view
-- fills from otel_traces needs the same setting to stay duplicate-free on replays.
ALTER TABLE {database}.otel_traces MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE {database}.genops_calls MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE {database}.otel_traces_trace_id_ts MODIFY SETTING non_replicated_deduplication_window = 1000;
