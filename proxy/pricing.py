"""Cost in USD from ``genai-prices`` (its bundled snapshot: no network at run time).

Lookups of (provider, model) are cached, since finding the model is most of the cost
of a price calculation. An unknown model gives :class:`UnknownPrice`, never $0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from genai_prices import Usage as PriceUsage
from genai_prices import data_snapshot

from genops.proxy.providers.base import Usage


@dataclass(frozen=True)
class Price:
    """A known price."""

    total_usd: float
    input_usd: float
    output_usd: float
    cache_savings_usd: float = 0.0  # cached input at the uncached input price, minus its cached price


@dataclass(frozen=True)
class UnknownPrice:
    """No price could be computed; ``reason`` says why (``unknown_model``, ``no_usage``...)."""

    reason: str


_VERTEX_VERSION = re.compile(r"@[\w.-]+$")
_BEDROCK_REGION = re.compile(r"^(us|eu|apac|global|ap|ca|sa|jp|au)\.(?=[a-z]+\.)")


def normalize_model(model: str) -> str:
    """A model id as ``genai-prices`` knows it: no ``models/`` prefix, Vertex ``@version``
    suffix or Bedrock cross-region prefix."""
    name = model.strip()
    if name.startswith("models/"):
        name = name[len("models/") :]
    if "/" in name and name.split("/", 1)[0] in {"publishers", "projects"}:
        name = name.rsplit("/", 1)[-1]
    name = _VERTEX_VERSION.sub("", name)
    return _BEDROCK_REGION.sub("", name)


@lru_cache(maxsize=4096)
def _lookup(provider_id: str, model: str) -> tuple[Any, Any] | None:
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None


def price_call(provider_id: str | None, model: str | None, usage: Usage) -> Price | UnknownPrice:
    """The USD cost of one call, or why it is unknown."""
    if not provider_id:
        return UnknownPrice("unpriced_provider")
    if not model:
        return UnknownPrice("no_model")
    if not usage.reported:
        return UnknownPrice("no_usage")
    found = _lookup(provider_id, normalize_model(model))
    if found is None:
        return UnknownPrice("unknown_model")
    provider, model_info = found
    try:
        result = model_info.calc_price(
            PriceUsage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_read_tokens=usage.cache_read_tokens or None,
                cache_write_tokens=usage.cache_write_tokens or None,
            ),
            provider,
            genai_request_timestamp=datetime.now(tz=timezone.utc),
            auto_update_timestamp=None,
        )
    except (LookupError, ValueError, TypeError) as exc:
        return UnknownPrice(f"price_error:{type(exc).__name__}")
    savings = 0.0
    if usage.cache_read_tokens:
        savings = _cache_savings(provider, model_info, usage, float(result.total_price))
    return Price(float(result.total_price), float(result.input_price), float(result.output_price), savings)


def _cache_savings(provider: Any, model_info: Any, usage: Usage, actual_usd: float) -> float:
    """What the call would have cost with its cache reads billed as plain input, minus what it cost."""
    try:
        uncached = model_info.calc_price(
            PriceUsage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_read_tokens=None,
                cache_write_tokens=usage.cache_write_tokens or None,
            ),
            provider,
            genai_request_timestamp=datetime.now(tz=timezone.utc),
            auto_update_timestamp=None,
        )
    except (LookupError, ValueError, TypeError):
        return 0.0
    return max(0.0, float(uncached.total_price) - actual_usd)
