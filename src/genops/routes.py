"""Gateway routes: the ``[[routes]]`` tables of the config file, read and checked.

A client names a route as its model (``model="support-bot"``); the proxy's router
(proxy/routing/) then picks one of the route's targets, retries and falls back. This module
only reads and validates the file: one line names the first problem, so a reload that finds
a bad file can refuse it and keep the running routes (docs/routing.md).

```toml
[[routes]]
name = "support-bot"
strategy = "weighted"          # weighted | fallback | least-latency
sticky = "user"                # user | session | none
retry = { attempts = 2, on = [429, 500, 502, 503, 504, "timeout"] }

[[routes.targets]]
target = "openai:gpt-4o-mini"
weight = 90

[routes.fallback]
targets = ["openai:gpt-4o"]
```
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from genops.config import ConfigError, config_file, named_upstreams

STRATEGIES = ("weighted", "fallback", "least-latency")
STICKY = ("user", "session", "none")
#: Providers a route target may name (besides ``u/<name>``, a named OpenAI-compatible upstream).
TARGET_PROVIDERS = ("openai", "anthropic", "gemini")
#: Where a target's key is read when GenOps, not the client, holds it (see :func:`target_key_env`).
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
#: Failures a route retries and falls back on when its ``retry.on`` does not say.
DEFAULT_RETRY_ON = (429, 500, 502, 503, 504, "timeout", "connection")
_RETRY_WORDS = ("timeout", "connection")
_DEFAULT_RETRY_STATUSES = frozenset(status for status in DEFAULT_RETRY_ON if isinstance(status, int))
_ROUTE_KEYS = frozenset({"name", "strategy", "sticky", "retry", "targets", "fallback", "timeout_s"})
_TARGET_KEYS = frozenset({"target", "weight", "key_env"})
_RETRY_KEYS = frozenset({"attempts", "on", "backoff_ms", "max_wait_s"})


class Target(NamedTuple):
    """``provider:model``: an adapter name (``openai``, ``anthropic``, ``gemini``) or ``u/<name>``
    (the named upstream ``GENOPS_UPSTREAM_<NAME>``), and the model to ask it for."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def adapter_name(self) -> str:
        """The name of the proxy adapter that serves this target (proxy/providers/)."""
        return "upstream:" + self.provider[2:] if self.provider.startswith("u/") else self.provider


class RouteTarget(NamedTuple):
    """One target of a route, its weight (``weighted``), and the variable holding its key, if GenOps holds it."""

    target: Target
    weight: float = 1.0
    key_env: str | None = None


class RetryPolicy(NamedTuple):
    """How often one target is tried (``attempts``, the first included), on which failures, how long
    to wait between tries (``backoff_ms`` doubled each time, or the answer's ``Retry-After``), and the
    longest wait worth making (``max_wait_s``: a longer ``Retry-After`` moves on to the next target)."""

    attempts: int = 1
    on_status: frozenset[int] = _DEFAULT_RETRY_STATUSES
    on_timeout: bool = True
    on_connection: bool = True
    backoff_ms: int = 200
    max_wait_s: float = 10.0


class Route(NamedTuple):
    name: str
    strategy: str
    sticky: str
    retry: RetryPolicy
    targets: tuple[RouteTarget, ...]
    fallback: tuple[RouteTarget, ...]
    timeout_s: float | None = None  # per attempt; None: GENOPS_UPSTREAM_TIMEOUT_S


class RouteTable(NamedTuple):
    """The routes of one reading of the config file (``path`` None: no file), keyed by name."""

    routes: Mapping[str, Route]
    path: Path | None = None
    mtime_ns: int = 0


NO_ROUTES = RouteTable(MappingProxyType({}))


def parse_target(text: Any, where: str = "target") -> Target:
    """``"provider:model"`` read and checked; raises :class:`ConfigError` naming ``where``."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{where}: expected \"provider:model\" (e.g. \"openai:gpt-4o-mini\"), got {text!r}")
    provider, _, model = text.partition(":")
    provider, model = provider.strip(), model.strip()
    if provider.startswith("u/"):
        name = provider[2:]
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ConfigError(f"{where}: {provider!r} is not a named upstream (u/<name>, GENOPS_UPSTREAM_<NAME>)")
    elif provider not in TARGET_PROVIDERS:
        raise ConfigError(f"{where}: unknown provider {provider!r}; use one of "
                          f"{', '.join(TARGET_PROVIDERS)} or u/<name> (a named upstream)")
    if not model or not model.isprintable() or any(c.isspace() for c in model):
        raise ConfigError(f"{where}: {text!r} names no model")
    return Target(provider, model)


def target_key_env(target: RouteTarget) -> str:
    """The environment variable holding the key GenOps sends to ``target`` when the client's own key
    must not go there (another provider or upstream than the client's): the target's ``key_env``,
    else ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` / ``GEMINI_API_KEY``, else
    ``GENOPS_KEY_<NAME>`` for a named upstream."""
    if target.key_env:
        return target.key_env
    provider = target.target.provider
    if provider.startswith("u/"):
        return f"GENOPS_KEY_{provider[2:].upper()}"
    return DEFAULT_KEY_ENV[provider]


def _number(value: Any, where: str, minimum: float, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: must be {kind} >= {minimum:g}, got {value!r}")
    return value


def _retry(value: Any, where: str) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table, e.g. {{ attempts = 2, on = [429, 503, \"timeout\"] }}")
    unknown = set(value) - _RETRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_RETRY_KEYS))})")
    attempts = _number(value.get("attempts", 1), f"{where}.attempts", 1, integer=True)
    if attempts > 10:
        raise ConfigError(f"{where}.attempts: at most 10, got {attempts}")
    on = value.get("on", list(DEFAULT_RETRY_ON))
    if not isinstance(on, list):
        raise ConfigError(f"{where}.on: must be a list of status codes and \"timeout\" / \"connection\"")
    statuses = set()
    for item in on:
        if isinstance(item, int) and not isinstance(item, bool) and 400 <= item <= 599:
            statuses.add(item)
        elif item not in _RETRY_WORDS:
            raise ConfigError(f"{where}.on: {item!r} is neither a 4xx/5xx status nor \"timeout\" / \"connection\"")
    return RetryPolicy(
        attempts=attempts,
        on_status=frozenset(statuses),
        on_timeout="timeout" in on,
        on_connection="connection" in on,
        backoff_ms=_number(value.get("backoff_ms", 200), f"{where}.backoff_ms", 0, integer=True),
        max_wait_s=float(_number(value.get("max_wait_s", 10.0), f"{where}.max_wait_s", 0)),
    )


def _target_entry(value: Any, where: str) -> RouteTarget:
    if isinstance(value, str):  # the short form: a bare "provider:model"
        return RouteTarget(parse_target(value, where))
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be \"provider:model\" or a table with target = \"provider:model\"")
    unknown = set(value) - _TARGET_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TARGET_KEYS))})")
    key_env = value.get("key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env.replace("_", "").isalnum()):
        raise ConfigError(f"{where}.key_env: must name an environment variable, got {key_env!r}")
    return RouteTarget(parse_target(value.get("target"), f"{where}.target"),
                       float(_number(value.get("weight", 1), f"{where}.weight", 0)), key_env)


def _route(value: Any, where: str, upstreams: Mapping[str, str]) -> Route:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table ([[routes]])")
    name = value.get("name")
    if not isinstance(name, str) or not name or not name.isprintable() or any(c.isspace() for c in name):
        raise ConfigError(f"{where}.name: a route needs a name without spaces (what clients send as model)")
    where = f"{where} ({name!r})"
    unknown = set(value) - _ROUTE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_ROUTE_KEYS))})")
    strategy = value.get("strategy", "weighted")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    sticky = value.get("sticky", "none")
    if sticky not in STICKY:
        raise ConfigError(f"{where}.sticky: {sticky!r} is not one of {', '.join(STICKY)}")
    raw_targets = value.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError(f"{where}.targets: a route needs at least one target ([[routes.targets]])")
    targets = tuple(_target_entry(t, f"{where}.targets[{i}]") for i, t in enumerate(raw_targets))
    if strategy == "weighted" and not any(t.weight > 0 for t in targets):
        raise ConfigError(f"{where}.targets: a weighted route needs a target with weight > 0")
    fallback_table = value.get("fallback", {})
    if isinstance(fallback_table, list):  # fallback = ["openai:gpt-4o"] is accepted too
        fallback_table = {"targets": fallback_table}
    if not isinstance(fallback_table, dict) or set(fallback_table) - {"targets"}:
        raise ConfigError(f"{where}.fallback: must be a table with targets = [\"provider:model\", ...]")
    raw_fallback = fallback_table.get("targets", [])
    if not isinstance(raw_fallback, list):
        raise ConfigError(f"{where}.fallback.targets: must be a list of \"provider:model\"")
    fallback = tuple(_target_entry(t, f"{where}.fallback.targets[{i}]") for i, t in enumerate(raw_fallback))
    for entry in (*targets, *fallback):
        provider = entry.target.provider
        if provider.startswith("u/") and provider[2:] not in upstreams:
            raise ConfigError(f"{where}: target {str(entry.target)!r} names the upstream {provider[2:]!r}, "
                              f"but GENOPS_UPSTREAM_{provider[2:].upper()} is not set")
    timeout = value.get("timeout_s")
    if timeout is not None:
        timeout = float(_number(timeout, f"{where}.timeout_s", 0.001))
    return Route(name, strategy, sticky, _retry(value.get("retry"), f"{where}.retry"), targets, fallback, timeout)


def parse_routes(raw: Any, source: str, env: Mapping[str, str] | None = None) -> dict[str, Route]:
    """The ``routes`` array of a parsed config file, checked; :class:`ConfigError` names the first problem
    (prefixed with ``source``, the file)."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: routes must be an array of tables ([[routes]])")
    try:
        upstreams = named_upstreams(env)
        routes: dict[str, Route] = {}
        for index, value in enumerate(raw):
            route = _route(value, f"routes[{index}]", upstreams)
            if route.name in routes:
                raise ConfigError(f"routes[{index}]: a second route named {route.name!r}")
            routes[route.name] = route
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return routes


def load_routes(env: Mapping[str, str] | None = None) -> RouteTable:
    """The routes of the config file (``$GENOPS_CONFIG``, else ``./genops.toml``); no file, no routes.

    Raises :class:`ConfigError` with one line naming the first problem.
    """
    env = os.environ if env is None else env
    path = config_file(env)
    if path is None:
        return NO_ROUTES
    try:
        mtime_ns = path.stat().st_mtime_ns
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    raw = data.get("routes")
    if raw is None and isinstance(data.get("genops"), dict):  # [[genops.routes]] beside [genops] settings
        raw = data["genops"].get("routes")
    return RouteTable(MappingProxyType(parse_routes(raw, str(path), env)), path, mtime_ns)
