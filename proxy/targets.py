"""Per-request upstream override: ``GenOps-Target-Url`` (alias ``Helicone-Target-URL``), and the
checks every forwarded URL passes.

A client may pick the upstream base URL per request, but only among allowed hosts:
the well-known provider hosts, the hosts of every configured base URL and named upstream,
and ``GENOPS_ALLOWED_TARGETS``, each on its own port only (443 for the provider hosts, the
configured URL's port, the port an allowlist entry names, else the scheme's standard port).
Anything else is refused, so the proxy cannot be used to reach arbitrary (internal) addresses
or other services on an allowed host.

Two more rules hold for every route, with or without a target URL:

- the path forwarded upstream never holds a ``.`` or ``..`` segment (raw, percent-encoded in any
  case, or with backslashes), so a request cannot climb out of an upstream's configured base
  path (``/u/name/v1/..%2F..%2Fadmin``);
- a URL's user info (``user:password@``) is never written anywhere: not in errors to the
  client, spans, the spool or logs (:func:`mask_userinfo`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

from multidict import MultiMapping

from genops.config import Settings, named_upstreams
from genops.proxy.providers.base import ProviderAdapter, RequestError, Upstream

TARGET_HEADERS = ("GenOps-Target-Url", "Helicone-Target-URL")

# Public model API hosts a target URL may always name (https on port 443 only). "*" matches any prefix.
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

STANDARD_PORTS = {"http": 80, "https": 443}
_DOT_SEGMENTS = frozenset({".", ".."})
#: A shown (echoed) URL is cut to this many characters.
_SHOWN_CHARS = 120


def mask_userinfo(url: str, replacement: str = "***@") -> str:
    """``url`` with the user info of its authority (``user:password@``) replaced by ``replacement``.

    The authority ends where :func:`urllib.parse.urlsplit` (and so the upstream client) ends it,
    at the first ``/``, ``?`` or ``#``, and the user info at its last ``@``. Never raises, so it
    serves malformed URLs too. Costs one substring test for the usual URL without an ``@``.
    """
    if "@" not in url:
        return url
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end != -1 else (2 if url.startswith("//") else 0)
    end = len(url)
    for separator in "/?#":
        found = url.find(separator, start, end)
        if found != -1:
            end = found
    at = url.rfind("@", start, end)
    if at == -1:
        return url
    return url[:start] + replacement + url[at + 1:]


def _shown(url: str) -> str:
    """A client's rejected target URL as an error message may echo it: user info masked, and
    anything before a stray ``@`` too (a raw ``/`` inside a password ends the authority early
    and would otherwise show the rest), capped, control characters escaped by ``repr``."""
    shown = mask_userinfo(url)
    if "@" in shown:
        scheme_end = shown.find("://")
        start = scheme_end + 3 if scheme_end != -1 else 0
        shown = shown[:start] + "***@" + shown.rpartition("@")[2]
    return repr(shown[:_SHOWN_CHARS])


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` holds a ``.`` or ``..`` segment, raw or percent-encoded in any case
    (``%2e%2E``, ``..%2f``, even encoded twice: the proxy decoded the path once and the upstream
    decodes it again), with ``/`` or ``\\`` as separators.

    The usual path (``/chat/completions``, ``/v1beta/models/gemini-2.0-flash:...``) has no
    ``/.``, ``\\`` or ``%`` and returns after three substring tests (callers on the hot path
    repeat them inline to save the call); only the others are decoded and split (~10 µs).
    """
    if "/." not in path and "\\" not in path and "%" not in path and not path.startswith("."):
        return False
    decoded = path
    for _ in range(4):  # a few rounds of decoding: percent-encoding nested deeper is refused below
        if "%" not in decoded:
            break
        decoded, before = unquote(decoded), decoded
        if decoded == before:
            break
    segments = decoded.replace("\\", "/").split("/")
    return any(segment in _DOT_SEGMENTS for segment in segments)


def check_path(path: str) -> None:
    """Refuse (400 ``invalid_path``) a path to forward that could leave the upstream's base path."""
    if has_dot_segment(path):
        raise RequestError(
            400,
            "The request path contains a '.' or '..' segment (possibly percent-encoded or with "
            "backslashes); GenOps does not forward such paths.",
            "invalid_request_error",
            "invalid_path",
        )


class _Allowed(NamedTuple):
    """One allowlist entry: scheme (None: http or https), host pattern, port (None: the scheme's standard one)."""

    scheme: str | None
    host: str
    port: int | None

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and self.scheme != scheme:
            return False
        if port != (self.port if self.port is not None else STANDARD_PORTS[scheme]):
            return False
        if self.host.startswith("*"):
            suffix = self.host[1:]
            return host.endswith(suffix) and len(host) > len(suffix)
        return host == self.host


def _allowlist_entry(entry: str) -> _Allowed | None:
    """A ``GENOPS_ALLOWED_TARGETS`` entry (``host``, ``host:port``, ``*.domain[:port]``,
    ``[v6addr]:port``); None for one that cannot be read (a port that is no number)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif ":" in entry:
        host, _, port = entry.rpartition(":")
    else:
        host, port = entry, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return _Allowed(None, host.rstrip("."), int(port) if port else None)


class TargetPolicy:
    """Decides whether a requested target URL may be used."""

    def __init__(self, configured: Iterable[str], extra_hosts: Iterable[str] = ()) -> None:
        # Known provider hosts: https on 443 only (an open port list would reach e.g. ssh on :22).
        self.entries: list[_Allowed] = [_Allowed("https", h, 443) for h in KNOWN_PROVIDER_HOSTS]
        # Configured base URLs: their exact scheme, host and port (templates contribute a wildcard host).
        for url in configured:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                continue  # a malformed configured URL allows nothing
            host = (parts.hostname or "").replace("{location}", "*").replace("{resource}", "*")
            if not host or parts.scheme not in STANDARD_PORTS:
                continue
            if "*" in host and not host.startswith("*"):
                continue  # a placeholder inside the name, e.g. "x{resource}y": too loose to allow
            self.entries.append(_Allowed(parts.scheme, host, port or STANDARD_PORTS[parts.scheme]))
        self.entries.extend(entry for entry in map(_allowlist_entry, extra_hosts) if entry is not None)

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> TargetPolicy:
        configured = [settings.openai_base_url, settings.anthropic_base_url, settings.gemini_base_url,
                      settings.vertex_base_url, settings.azure_base_url, *named_upstreams(env).values()]
        extra = [h for h in settings.allowed_targets.split(",") if h.strip()]
        return cls(configured, extra)

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is a well-formed target on an allowed host and port."""
        try:
            return self.check(url) is not None
        except RequestError:
            return False

    def check(self, url: str) -> SplitResult:
        """``url`` parsed, if it is a well-formed target URL on an allowed host and port.

        Raises a 400 :class:`RequestError` (``invalid_target_url``) naming what is wrong with a
        malformed one, and a 403 (``target_not_allowed``) for one outside the allowlist. Error
        messages never show user info.
        """
        parts = parse_target(url)
        port = parts.port or STANDARD_PORTS[parts.scheme]
        host = (parts.hostname or "").rstrip(".")
        if not any(entry.matches(parts.scheme, host, port) for entry in self.entries):
            raise RequestError(
                403,
                f"The target URL host {parts.netloc[:_SHOWN_CHARS]!r} is not allowed. Allowed are the known "
                "provider hosts (https, port 443), the configured upstreams (their own port) and "
                "GENOPS_ALLOWED_TARGETS.",
                "permission_error",
                "target_not_allowed",
            )
        return parts

    def target(self, headers: Mapping[str, str]) -> str | None:
        """The requested target base URL (no query or fragment), None when none was asked for.

        Raises a 400 or 403 :class:`RequestError` (see :meth:`check`).
        """
        for name in TARGET_HEADERS:
            value = headers.get(name)
            if value:
                parts = self.check(value.strip().rstrip("/"))
                return parts._replace(query="", fragment="").geturl()
        return None


def _invalid_target(url: str, problem: str) -> RequestError:
    return RequestError(400, f"The target URL {_shown(url)} {problem}.", "invalid_request_error",
                        "invalid_target_url")


def parse_target(url: str) -> SplitResult:
    """A client's target URL parsed and checked for form: printable ASCII, no user info, an
    http(s) scheme, a host, a port in 1-65535, no dot-segments in its path. Raises a 400
    :class:`RequestError` (``invalid_target_url``) naming the first problem found."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise _invalid_target(url, "contains spaces, control characters or non-ASCII characters")
    if "@" in url:  # anywhere: even a malformed authority must not smuggle credentials or a host
        raise _invalid_target(url, "contains user info ('@'); send credentials in headers, not in the URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # bad brackets, a port that is no number or out of range
        raise _invalid_target(url, f"cannot be parsed ({exc})") from None
    if parts.scheme not in STANDARD_PORTS:
        raise _invalid_target(url, "must start with http:// or https://")
    if not parts.hostname:
        raise _invalid_target(url, "has no host")
    if port == 0:
        raise _invalid_target(url, "has port 0")
    if has_dot_segment(parts.path):
        raise _invalid_target(url, "has a '.' or '..' segment in its path")
    return parts


def route_upstream(adapter: ProviderAdapter, policy: TargetPolicy | None, tail: str, query_string: str,
                   headers: MultiMapping[str]) -> Upstream:
    """The adapter's upstream for this request, on the requested target base URL if one is allowed
    (``policy`` None: always the configured base URL, as for a gateway route's target).

    Raises a 400 :class:`RequestError` for a path with dot-segments or a malformed target URL,
    a 403 for a target outside the allowlist.
    """
    # Inline pre-test (every call passes here): a dot-segment needs "/." (the tail starts with
    # "/"), a backslash or a percent escape; the usual tail has none (~0.1 µs for the three tests).
    if "/." in tail or "\\" in tail or "%" in tail:
        check_path(tail)
    base_url = policy.target(headers) if policy is not None else None
    upstream = adapter.upstream(tail, query_string, headers, base_url=base_url)
    upstream.drop_headers = (*upstream.drop_headers, *TARGET_HEADERS)  # addressed to the proxy only
    if "@" in upstream.stored_url:  # cheap test first: most URLs have no "@" anywhere
        # Credentials in a configured URL (http://user:pass@host) are sent, never stored or shown.
        upstream.stored_url = mask_userinfo(upstream.stored_url, "")
    return upstream
