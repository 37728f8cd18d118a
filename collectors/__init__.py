"""collectors: what takes spans in besides the proxy (the OTLP receiver) and the jobs that read
them back (anomaly detection)."""
