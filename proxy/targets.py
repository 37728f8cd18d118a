"""Per-request upstream override: ``GenOps-Target-Url`` (alias ``Helicone-Target-URL``).

A client may pick the upstream base URL per request, but only among allowed hosts:
the well-known provider hosts, the hosts of every configured base URL and named upstream,
and ``GENOPS_ALLOWED_TARGETS``. Anything else is refused, so the proxy cannot be used to
reach arbitrary (internal) addresses.
"""

from __future__ import annotations

from typing import Iterable, Mapping
from urllib.parse import urlsplit

from genops.config import Settings, named_upstreams
from genops.proxy.providers.base import ProviderAdapter, RequestError, Upstream

TARGET_HEADERS = ("GenOps-Target-Url", "Helicone-Target-URL")

# Public model API hosts a target URL may always name (https only). "*." matches any subdomain.
KNOWN_PROVIDER_HOSTS = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "*-aiplatform.googleapis.com",
    "aiplatform.us.rep.googleapis.com",
    "aiplatform.eu.rep.googleapis.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.groq.com",
    "api.mistral.ai",
    "openrouter.ai",
    "api.together.xyz",
    "api.together.ai",
    "api.deepseek.com",
    "api.x.ai",
    "api.fireworks.ai",
    "api.cerebras.ai",
    "api.perplexity.ai",
    "api.cohere.com",
    "api.cohere.ai",
)


def _host_matches(pattern: str, host: str, port: int | None) -> bool:
    """``pattern`` is ``host``, ``host:port``, ``*.domain`` or ``*-suffix`` (lower case)."""
    name, _, want_port = pattern.partition(":")
    if want_port and (port is None or str(port) != want_port):
        return False
    if name.startswith("*"):
        suffix = name[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == name


class TargetPolicy:
    """Decides whether a requested target URL may be used."""

    def __init__(self, configured: Iterable[str], extra_hosts: Iterable[str] = ()) -> None:
        # Configured base URLs: their exact scheme://host:port (templates contribute a wildcard host).
        self.patterns: list[tuple[str | None, str]] = [("https", h) for h in KNOWN_PROVIDER_HOSTS]
        for url in configured:
            parts = urlsplit(url)
            host = (parts.hostname or "").replace("{location}", "*").replace("{resource}", "*")
            if not host:
                continue
            if "*" in host and not host.startswith("*"):
                continue  # a placeholder inside the name, e.g. "x{resource}y": too loose to allow
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self.patterns.append((parts.scheme, f"{host}:{port}"))
        self.patterns.extend((None, h) for h in extra_hosts if h)

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> "TargetPolicy":
        configured = [settings.openai_base_url, settings.anthropic_base_url, settings.gemini_base_url,
                      settings.vertex_base_url, settings.azure_base_url, *named_upstreams(env).values()]
        extra = [h for h in settings.allowed_targets.split(",") if h]
        return cls(configured, extra)

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            return False
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        host = parts.hostname.lower().rstrip(".")
        return any((scheme is None or scheme == parts.scheme) and _host_matches(pattern, host, port)
                   for scheme, pattern in self.patterns)

    def target(self, headers: Mapping[str, str]) -> str | None:
        """The requested target base URL, None when none was asked for.

        Raises a 403 :class:`RequestError` for a target outside the allowlist.
        """
        for name in TARGET_HEADERS:
            value = headers.get(name)
            if value:
                url = value.strip().rstrip("/")
                if not self.allowed(url):
                    host = urlsplit(url).netloc or url[:100]
                    raise RequestError(
                        403,
                        f"The target URL host {host!r} is not allowed. Allowed are the known provider hosts, the "
                        "configured upstreams and GENOPS_ALLOWED_TARGETS.",
                        "permission_error",
                        "target_not_allowed",
                    )
                return urlsplit(url)._replace(query="", fragment="").geturl()
        return None


def route_upstream(adapter: ProviderAdapter, policy: TargetPolicy, tail: str, query_string: str,
                   headers: Mapping[str, str]) -> Upstream:
    """The adapter's upstream for this request, on the requested target base URL if one is allowed."""
    upstream = adapter.upstream(tail, query_string, headers, base_url=policy.target(headers))
    upstream.drop_headers = (*upstream.drop_headers, *TARGET_HEADERS)  # addressed to the proxy only
    if "@" in upstream.stored_url:  # cheap test first: most URLs have no "@" anywhere
        parts = urlsplit(upstream.stored_url)
        if "@" in parts.netloc:  # credentials in a configured URL (http://user:pass@host) are never stored
            upstream.stored_url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return upstream
