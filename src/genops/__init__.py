"""GenOps: an LLM observability and tracing proxy."""

__version__ = "0.1.0"
