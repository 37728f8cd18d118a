"""Which provider a request at the root (``/v1/...``, ``/v1beta/...``) is for, by wire format.

SDKs pointed at the bare proxy URL all send ``/v1/...``: ``Anthropic(base_url="http://127.0.0.1:8080")``
(Claude Code with ``ANTHROPIC_BASE_URL``) sends ``/v1/messages``, google-genai sends
``/v1beta/models/{m}:generateContent``. The path says which API it is, and so do the headers:
``anthropic-version`` / ``anthropic-beta`` are Anthropic's, ``x-goog-api-key`` is Google's. A
provider's key is never sent to another provider: a request carrying Anthropic's or Google's
headers on a path that is not that provider's is refused (400 in that provider's error shape,
naming the base URL to use) instead of being forwarded to the OpenAI upstream.

:func:`root_route` is a few string comparisons and three header lookups (about 0.5 µs); it runs
only for root paths, before the adapter reads anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from multidict import istr

OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"

# Header names as istr: a CIMultiDict looks them up without case-folding them first.
_GOOGLE_KEY, _ANTHROPIC_VERSION, _ANTHROPIC_BETA = istr("x-goog-api-key"), istr("anthropic-version"), istr("anthropic-beta")

#: Anthropic API paths under ``/v1`` (the tail after ``/v1``): served by path alone.
ANTHROPIC_ONLY = ("/messages", "/complete")
#: Paths both APIs have (``/v1/models``, ``/v1/files``): Anthropic's when its headers say so.
ANTHROPIC_SHARED = ("/models", "/files")
#: Gemini API versions: ``/v1beta/...`` and ``/v1alpha/...`` at the root are Gemini's.
GEMINI_VERSIONS = ("/v1beta", "/v1alpha")
#: Gemini ``/v1`` paths OpenAI also has or could have: Gemini's when a Google key comes with them.
GEMINI_SHARED = ("/models", "/tunedModels", "/files", "/cachedContents", "/operations", "/batches")
#: Gemini methods after ``models/{m}:`` (``/v1/models/{m}:generateContent`` is Gemini's, while
#: ``/v1/models/{id}`` is OpenAI's; OpenAI fine-tune ids contain colons too, so the method is checked).
GEMINI_METHODS = frozenset({
    "generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents",
    "batchGenerateContent", "asyncBatchEmbedContent", "predict", "predictLongRunning", "generateAnswer",
    "countTextTokens", "countMessageTokens", "generateText", "generateMessage", "embedText", "batchEmbedText",
})


class RootRoute(NamedTuple):
    """Where a root request goes: the adapter's name and the tail it sees (its path after its
    prefix), or a refusal (``refuse`` is the message of a 400 in that adapter's error shape)."""

    adapter: str
    tail: str
    refuse: str | None = None


def _prefixed(tail: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        if tail.startswith(prefix) and (len(tail) == len(prefix) or tail[len(prefix)] in "/?"):
            return True
    return False


def _gemini_method(tail: str) -> bool:
    """``/models/{m}:{method}`` or ``/tunedModels/{m}:{method}`` with a Gemini method."""
    if not (tail.startswith("/models/") or tail.startswith("/tunedModels/")):
        return False
    name, _, method = tail.rpartition(":")
    return "/" not in name[tail.index("/", 1) + 1 :] and method in GEMINI_METHODS


def root_route(tail: str, headers: Mapping[str, str]) -> RootRoute | None:
    """The route for a request at ``/v1{tail}`` (``tail`` = the path after ``/v1``); None: OpenAI's.

    By path first (Anthropic's and Gemini's own paths), then by headers: Anthropic's or Google's
    on a path that is not theirs get a refusal from that provider's adapter, never the OpenAI upstream.
    """
    if tail.startswith(ANTHROPIC_ONLY) and _prefixed(tail, ANTHROPIC_ONLY):
        return RootRoute(ANTHROPIC, "/v1" + tail)
    if ":" in tail and _gemini_method(tail):
        return RootRoute(GEMINI, "/v1" + tail)
    if _GOOGLE_KEY in headers:
        if _prefixed(tail, GEMINI_SHARED):
            return RootRoute(GEMINI, "/v1" + tail)
        return RootRoute(GEMINI, "/v1" + tail, refuse=(
            f"GenOps serves the OpenAI API at /v1{tail}, and this request carries a Google API key "
            "(x-goog-api-key), which is never sent to another provider. Gemini API paths are "
            "/v1beta/models/{model}:{method} at the root, or use base_url http://<genops>/gemini."))
    if _ANTHROPIC_VERSION in headers or _ANTHROPIC_BETA in headers:
        if _prefixed(tail, ANTHROPIC_SHARED):
            return RootRoute(ANTHROPIC, "/v1" + tail)
        return RootRoute(ANTHROPIC, "/v1" + tail, refuse=(
            f"GenOps serves the OpenAI API at /v1{tail}, and this request carries Anthropic headers "
            "(anthropic-version / x-api-key), which are never sent to another provider. Use "
            "ANTHROPIC_BASE_URL=http://<genops> (Messages API at /v1/messages) or http://<genops>/anthropic."))
    return None  # OpenAI's (no tuple made: the common case stays a few comparisons)


def gemini_root_route(path: str, headers: Mapping[str, str]) -> RootRoute:
    """The route for ``/v1beta/...`` or ``/v1alpha/...`` at the root (``path`` = the whole path):
    Gemini's, unless the request carries Anthropic's headers (refused in Anthropic's shape)."""
    if (_ANTHROPIC_VERSION in headers or _ANTHROPIC_BETA in headers) and _GOOGLE_KEY not in headers:
        return RootRoute(ANTHROPIC, path, refuse=(
            f"{path} is a Gemini API path, and this request carries Anthropic headers (anthropic-version / "
            "x-api-key), which are never sent to another provider. Use ANTHROPIC_BASE_URL=http://<genops> "
            "(Messages API at /v1/messages) or http://<genops>/anthropic."))
    return RootRoute(GEMINI, path)
