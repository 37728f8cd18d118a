"""Vertex AI: ``/vertex/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{m}:{method}``.

The upstream host follows the location (``{location}-aiplatform.googleapis.com``; ``global``
is ``aiplatform.googleapis.com``), from ``GENOPS_VERTEX_BASE_URL``. The Bearer token is
forwarded untouched. Each publisher speaks its own wire format, which this adapter reuses
from the provider modules: Google's models the Gemini format (``generateContent`` /
``streamGenerateContent``), Anthropic's Claude the Messages format (``rawPredict`` /
``streamRawPredict``), others (Mistral, Llama...) the OpenAI chat format. Vertex's own
OpenAI-compatible endpoint (``.../locations/{l}/endpoints/openapi/chat/completions``, model
``google/gemini-...`` or ``meta/llama-...`` in the body) is read as OpenAI chat too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from multidict import MultiMapping

from genops.proxy.providers import anthropic, gemini, openai
from genops.proxy.providers.base import (
    NO_RESPONSE,
    NO_USAGE,
    PASS_THROUGH,
    ProviderAdapter,
    RequestError,
    RequestFacts,
    ResponseFacts,
    StreamState,
    TextPart,
    TextSlot,
    Upstream,
    Usage,
    parse_json_body,
    pick,
    read_json,
)
from genops.proxy.providers.openai import OpenAIStream
from genops.proxy.providers.openai import body_context as openai_body_context
from genops.proxy.providers.openai import read_usage as read_openai_usage

_PATH = re.compile(
    r"^/(?P<version>v1\w*)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>\w+)$"
)
_OPENAPI = re.compile(
    r"^/(?P<version>v1\w*)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/endpoints/openapi/chat/completions$"
)
_LOCATION = re.compile(r"/locations/([^/]+)")
_VALID_LOCATION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MULTI_REGIONS = ("us", "eu")  # served by aiplatform.{us|eu}.rep.googleapis.com

# Publisher -> genai-prices provider id of its models.
PRICE_PROVIDERS = {"google": "google", "anthropic": "anthropic", "mistralai": "mistral", "meta": None}


class VertexAdapter(ProviderAdapter):
    """Vertex AI's model endpoints under ``/vertex``."""

    name = "vertex"
    provider_name = "gcp.vertex_ai"
    price_provider_id = "google"
    prefixes = ("/vertex",)

    def __init__(self, base_url_template: str) -> None:
        self.template = base_url_template.rstrip("/")

    def base_for(self, location: str) -> str:
        """The upstream base URL of one location (checked: it becomes part of a host name)."""
        if not _VALID_LOCATION.match(location):
            raise RequestError(400, f"Invalid location {location[:64]!r} in the request path.", "INVALID_ARGUMENT")
        if "{location}-aiplatform.googleapis.com" in self.template:  # Google's own host naming
            if location == "global":
                return self.template.replace("{location}-", "")
            if location in MULTI_REGIONS:
                return self.template.replace("{location}-aiplatform", f"aiplatform.{location}.rep")
        return self.template.replace("{location}", location)

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        found = _LOCATION.search(tail)
        base = base_url.rstrip("/") if base_url else self.base_for(found.group(1) if found else "global")
        stored = f"{base}{tail}"
        return Upstream(url=f"{stored}?{query_string}" if query_string else stored, stored_url=stored)

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        match = _PATH.match(tail)
        if method == "POST" and match is None and (openapi := _OPENAPI.match(tail)) is not None:
            self.base_for(openapi["location"])
            request = parse_json_body(body)
            if not isinstance(request, dict):
                raise RequestError(400, "The request body must be a JSON object.", "INVALID_ARGUMENT")
            model = request.get("model")
            # OpenAI format; the model names its publisher ("google/gemini-2.0-flash-001").
            return RequestFacts("chat", model if isinstance(model, str) else None, request.get("stream") is True,
                                request, pick(request, openai.REQUEST_PARAMETERS), "openapi")
        if method != "POST" or match is None:
            return PASS_THROUGH
        self.base_for(match["location"])  # refuse a malformed location before anything else
        publisher, model, action = match["publisher"], match["model"], match["method"]
        if publisher == "google":
            if action == "predict" and "embedding" in model:
                return RequestFacts("embeddings", model, request_json=parse_json_body(body), variant=publisher)
            return gemini.read_request(action, model, body, variant=publisher)
        if action not in ("rawPredict", "streamRawPredict") or model == "count-tokens":
            return PASS_THROUGH
        if publisher == "anthropic":
            return anthropic.read_request(body, model=model, stream=action == "streamRawPredict" or None,
                                          variant=publisher)
        # OpenAI-compatible chat bodies (Mistral, Llama, ... on Vertex)
        request = parse_json_body(body)
        stream = action == "streamRawPredict" or (isinstance(request, dict) and request.get("stream") is True)
        return RequestFacts("chat", model, stream, request, variant=publisher)

    def parse_response(self, request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
        if request.variant == "anthropic":
            return anthropic.read_response(status, body)
        if request.variant == "google" and request.operation == "embeddings" and status < 400:
            return read_predict_statistics(body)
        if request.variant == "google" or status >= 400:
            return gemini.read_response(request, status, body)
        data = read_json(body)
        if not isinstance(data, dict):
            return NO_RESPONSE if data is None else ResponseFacts(body_json=data)
        return ResponseFacts(data.get("id"), data.get("model"), usage=read_openai_usage(NO_USAGE, data.get("usage")),
                             body_json=data)

    def new_stream(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> StreamState:
        if request.variant == "anthropic":
            return anthropic.AnthropicStream(request, started_ns, usage_injected)
        if request.variant == "google":
            return gemini.GeminiStream(request, started_ns, usage_injected)
        return OpenAIStream(request, started_ns, usage_injected)

    def streams_response(self, request: RequestFacts, status: int, content_type: str) -> bool:
        return request.stream and status < 400

    def price_provider(self, request: RequestFacts) -> str | None:
        if request.variant == "openapi":
            publisher = (request.model or "").partition("/")[0]
            return PRICE_PROVIDERS.get("mistralai" if publisher == "mistral" else publisher)
        return PRICE_PROVIDERS.get(request.variant or "google")

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        return gemini.error_body(status, message)

    def request_context(self, request: RequestFacts) -> dict[str, Any]:
        parsed = request.request_json
        if request.variant == "anthropic":
            return anthropic.body_context(parsed)
        if request.variant == "google":  # Vertex request labels (billing metadata) count as properties
            labels = parsed.get("labels") if isinstance(parsed, dict) else None
            return {f"property-{k}": v for k, v in labels.items()} if isinstance(labels, dict) else {}
        return openai_body_context(parsed)

    # -- content (safety scanning and capture): each publisher's own format -----------------
    @staticmethod
    def _slots(facts: RequestFacts) -> Iterator[TextSlot]:
        request: Any = facts.request_json
        if facts.variant == "anthropic":
            return anthropic.request_slots(request)
        if facts.variant == "google":
            if isinstance(request, dict) and isinstance(request.get("instances"), list):  # embeddings :predict
                return _instances_slots(request["instances"])
            return gemini.request_slots(request)
        return openai.request_slots("chat", request)

    def text_slots(self, request: RequestFacts) -> Iterator[TextSlot]:
        return self._slots(request)

    def response_parts(self, request: RequestFacts, data: Any) -> list[TextPart]:
        if request.variant == "anthropic":
            return anthropic.response_parts(data)
        if request.variant == "google":
            return gemini.response_parts(data)
        return openai.response_parts("chat", data)


def _instances_slots(instances: list[Any]) -> Iterator[TextSlot]:
    """``{"instances": [{"content": "..."}]}`` of Vertex text-embedding models."""
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and isinstance(instance.get("content"), str):
            yield TextPart("user", i, 0, instance["content"]), instance, "content"


def read_predict_statistics(body: bytes) -> ResponseFacts:
    """Input tokens of a text-embedding ``:predict`` (``predictions[].embeddings.statistics.token_count``)."""
    data = read_json(body)
    if data is None:
        return NO_RESPONSE
    predictions = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(predictions, list):
        return ResponseFacts(body_json=data)
    total = None
    for prediction in predictions:
        statistics = ((prediction or {}).get("embeddings") or {}).get("statistics") if isinstance(prediction, dict) else None
        count = statistics.get("token_count") if isinstance(statistics, dict) else None
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            total = (total or 0) + int(count)
    if total is None:
        return ResponseFacts(body_json=data)
    return ResponseFacts(usage=Usage(input_tokens=total, output_tokens=0), body_json=data)
