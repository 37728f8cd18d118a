"""Provider adapters, one module each. :func:`build_adapters` is the only registry."""

from __future__ import annotations

from typing import Mapping

from genops.config import Settings, named_upstreams
from genops.proxy.providers.anthropic import AnthropicAdapter
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.providers.openai import OpenAIAdapter


def build_adapters(settings: Settings, env: Mapping[str, str] | None = None) -> list[ProviderAdapter]:
    """Every adapter the proxy serves, configured from ``settings`` (and named upstreams from ``env``)."""
    inject = settings.stream_usage == "inject"
    adapters: list[ProviderAdapter] = [
        OpenAIAdapter(settings.openai_base_url, inject_stream_usage=inject),
        AnthropicAdapter(settings.anthropic_base_url),
    ]
    return adapters
