"""Grafana dashboards for GenOps: definitions (``build``), the JSON files (``grafana/``), and ``push`` to a Grafana."""
