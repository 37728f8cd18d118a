"""Provider adapters, one module each. :func:`build_adapters` is the only registry."""

from __future__ import annotations

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.providers.openai import OpenAIAdapter


def build_adapters(settings: Settings) -> list[ProviderAdapter]:
    """Every adapter the proxy serves, configured from ``settings``."""
    return [
        OpenAIAdapter(settings.openai_base_url, inject_stream_usage=settings.stream_usage == "inject"),
    ]
