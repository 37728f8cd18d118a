"""Cost in USD from ``genai-prices`` (its bundled snapshot: no network at run time).

Lookups of (provider, model) are cached, and within a price tier the per-token rates are
probed once from the library (see :class:`_LinearRates`), so a price costs about 1 µs
instead of 70. An unknown model gives :class:`UnknownPrice`, never $0.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
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


@lru_cache(maxsize=4096)
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


def _library_price(provider: Any, model_info: Any, usage: Usage, when: datetime, *, cached: bool = True) -> Any:
    return model_info.calc_price(
        PriceUsage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=(usage.cache_read_tokens or None) if cached else None,
            cache_write_tokens=usage.cache_write_tokens or None,
            cache_write_1h_tokens=usage.cache_write_1h_tokens or None,
        ),
        provider,
        genai_request_timestamp=when,
        auto_update_timestamp=None,
    )


def _slow_price(provider: Any, model_info: Any, usage: Usage, when: datetime) -> Price:
    result = _library_price(provider, model_info, usage, when)
    total = float(result.total_price)
    savings = 0.0
    if usage.cache_read_tokens:  # the same call with its cache reads billed as plain input
        uncached = _library_price(provider, model_info, usage, when, cached=False)
        savings = max(0.0, float(uncached.total_price) - total)
    return Price(total, float(result.input_price), float(result.output_price), savings)


@dataclass(frozen=True)
class _LinearRates:
    """USD per token for one model, valid while total input tokens stay below ``limit``.

    ``genai-prices`` is exact but generic (about 70 µs a call). Within one price tier a
    model's price is linear in (uncached input, cache read, cache write, output) tokens, so
    the rates are probed once from the library itself and checked against it before use.
    """

    uncached: float
    cache_read: float
    cache_write: float
    output: float
    limit: int

    def price(self, usage: Usage) -> Price:
        cache_read = usage.cache_read_tokens or 0
        cache_write = usage.cache_write_tokens or 0
        uncached = max(0, (usage.input_tokens or 0) - cache_read - cache_write)
        input_usd = uncached * self.uncached + cache_read * self.cache_read + cache_write * self.cache_write
        output_usd = (usage.output_tokens or 0) * self.output
        savings = max(0.0, cache_read * (self.uncached - self.cache_read))
        return Price(input_usd + output_usd, input_usd, output_usd, savings)


_PRICE_FIELDS = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok")


@lru_cache(maxsize=4096)
def _linear_rates(provider_id: str, model: str, day: str) -> _LinearRates | None:
    """Probed per-token rates for ``model`` on ``day`` (prices can change by date), or None."""
    found = _lookup(provider_id, model)
    if found is None:
        return None
    provider, model_info = found
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    try:
        prices = model_info.get_prices(when)
    except Exception:  # noqa: BLE001 - unusual price shapes take the exact slow path
        return None
    limit = 1 << 62
    for name in _PRICE_FIELDS:
        value = getattr(prices, name, None)
        tiers = getattr(value, "tiers", None)
        if tiers:  # tiered by context size: linear only below the first tier
            limit = min(limit, *(int(t.start) for t in tiers))
        elif value is not None and not isinstance(value, (int, float, Decimal)):
            return None
    probe = max(1, min(1000, limit // 4))
    try:
        rates = _LinearRates(
            uncached=_slow_price(provider, model_info, Usage(probe, 0), when).total_usd / probe,
            cache_read=_slow_price(provider, model_info, Usage(probe, 0, cache_read_tokens=probe), when).total_usd / probe,
            cache_write=_slow_price(provider, model_info, Usage(probe, 0, cache_write_tokens=probe), when).total_usd / probe,
            output=_slow_price(provider, model_info, Usage(0, probe), when).total_usd / probe,
            limit=limit,
        )
        check = Usage(min(limit // 2 + 17, limit - 1), 311, cache_read_tokens=limit // 8 + 3,
                      cache_write_tokens=limit // 16 + 1)
        exact = _slow_price(provider, model_info, check, when).total_usd
    except (LookupError, ValueError, TypeError, ArithmeticError):
        return None
    if abs(rates.price(check).total_usd - exact) > 1e-9 * max(1.0, exact):
        return None  # not linear after all: always use the library
    return rates


_day: tuple[int, str] = (-1, "")


def _utc_day() -> str:
    """Today's UTC date as ``YYYY-MM-DD`` (formatted once a day, not once a call)."""
    global _day
    number = int(time.time() // 86400)
    if number != _day[0]:
        _day = (number, datetime.fromtimestamp(number * 86400, tz=UTC).date().isoformat())
    return _day[1]


def price_call(provider_id: str | None, model: str | None, usage: Usage) -> Price | UnknownPrice:
    """The USD cost of one call, or why it is unknown."""
    if not provider_id:
        return UnknownPrice("unpriced_provider")
    if not model:
        return UnknownPrice("no_model")
    if not usage.reported:
        return UnknownPrice("no_usage")
    name = normalize_model(model)
    rates = _linear_rates(provider_id, name, _utc_day())
    # 1-hour cache writes have their own rate: the exact path prices them.
    if rates is not None and (usage.input_tokens or 0) < rates.limit and not usage.cache_write_1h_tokens:
        return rates.price(usage)
    now = datetime.now(tz=UTC)
    found = _lookup(provider_id, name)
    if found is None:
        return UnknownPrice("unknown_model")
    try:
        return _slow_price(found[0], found[1], usage, now)
    except (LookupError, ValueError, TypeError) as exc:
        return UnknownPrice(f"price_error:{type(exc).__name__}")
