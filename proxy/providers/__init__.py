"""Provider adapters, one module each. :func:`build_adapters` is the only registry."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from genops.config import Settings, named_upstreams
from genops.proxy.providers.anthropic import AnthropicAdapter
from genops.proxy.providers.azure import AzureOpenAIAdapter
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.providers.gemini import GeminiAdapter
from genops.proxy.providers.openai import OpenAIAdapter
from genops.proxy.providers.vertex import VertexAdapter

# Well-known OpenAI-compatible services: upstream name or host -> (gen_ai.provider.name, genai-prices id).
KNOWN_COMPATIBLE = {
    "openai": ("openai", "openai"),
    "api.openai.com": ("openai", "openai"),
    "groq": ("groq", "groq"),
    "api.groq.com": ("groq", "groq"),
    "mistral": ("mistral_ai", "mistral"),
    "api.mistral.ai": ("mistral_ai", "mistral"),
    "deepseek": ("deepseek", "deepseek"),
    "api.deepseek.com": ("deepseek", "deepseek"),
    "xai": ("x_ai", "x-ai"),
    "api.x.ai": ("x_ai", "x-ai"),
    "perplexity": ("perplexity", "perplexity"),
    "api.perplexity.ai": ("perplexity", "perplexity"),
    "openrouter": ("openrouter", "openrouter"),
    "openrouter.ai": ("openrouter", "openrouter"),
    "together": ("together", "together"),
    "api.together.xyz": ("together", "together"),
    "api.together.ai": ("together", "together"),
    "fireworks": ("fireworks", "fireworks"),
    "api.fireworks.ai": ("fireworks", "fireworks"),
    "cerebras": ("cerebras", "cerebras"),
    "api.cerebras.ai": ("cerebras", "cerebras"),
}


def compatible_identity(name: str, url: str) -> tuple[str, str | None]:
    """``(gen_ai.provider.name, genai-prices id)`` of a named upstream: known by host, then by name;
    otherwise the upstream's own name and no price (a self-hosted model has no list price)."""
    host = (urlsplit(url).hostname or "").lower()
    return KNOWN_COMPATIBLE.get(host) or KNOWN_COMPATIBLE.get(name) or (name, None)


def build_adapters(settings: Settings, env: Mapping[str, str] | None = None) -> list[ProviderAdapter]:
    """Every adapter the proxy serves, configured from ``settings`` (and named upstreams from ``env``)."""
    inject = settings.stream_usage == "inject"
    adapters: list[ProviderAdapter] = [
        OpenAIAdapter(settings.openai_base_url, inject_stream_usage=inject),
        AnthropicAdapter(settings.anthropic_base_url),
        GeminiAdapter(settings.gemini_base_url),
        VertexAdapter(settings.vertex_base_url),
        AzureOpenAIAdapter(settings.azure_base_url, inject_stream_usage=inject),
    ]
    for name, url in named_upstreams(env).items():
        provider_name, price_id = compatible_identity(name, url)
        adapters.append(OpenAIAdapter(url, name=f"upstream:{name}", prefix=f"/u/{name}/v1",
                                      provider_name=provider_name, price_provider_id=price_id,
                                      inject_stream_usage=inject))
    return adapters
