"""Azure OpenAI: the OpenAI wire format on ``/azure/{resource}/openai/...``.

Both route families of the ``openai`` SDK's ``AzureOpenAI`` client are served:
``/azure/{resource}/openai/deployments/{deployment}/chat/completions?api-version=...`` and the
newer ``/azure/{resource}/openai/v1/chat/completions``. The upstream is
``GENOPS_AZURE_BASE_URL`` with ``{resource}`` filled in; ``api-key`` (or a Bearer token) is
forwarded untouched. Everything about bodies and streams is :class:`OpenAIAdapter`'s.
"""

from __future__ import annotations

import re

from multidict import MultiMapping

from genops.proxy.providers.base import PASS_THROUGH, RequestError, RequestFacts, Upstream
from genops.proxy.providers.openai import OpenAIAdapter

_ROUTE = re.compile(r"^/(?P<resource>[^/]+)(?P<rest>/openai(?:/.*)?)$")
_DEPLOYMENT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)(?P<operation>/.*)$")
_V1 = re.compile(r"^/openai/v1(?P<operation>/.*)$")
_VALID_RESOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI under ``/azure``."""

    def __init__(self, base_url_template: str, *, inject_stream_usage: bool = True) -> None:
        super().__init__(base_url_template, name="azure", prefix="/azure", provider_name="azure.ai.openai",
                         price_provider_id="azure", inject_stream_usage=inject_stream_usage)
        self.template = base_url_template.rstrip("/")

    @staticmethod
    def _split(tail: str) -> tuple[str, str]:
        match = _ROUTE.match(tail)
        if match is None:
            raise RequestError(404, "Azure OpenAI routes are /azure/{resource}/openai/...", "invalid_request_error",
                               "unknown_route")
        if not _VALID_RESOURCE.match(match["resource"]):
            raise RequestError(400, f"Invalid Azure resource name {match['resource'][:64]!r}.",
                               "invalid_request_error", "invalid_resource")
        return match["resource"], match["rest"]

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        resource, rest = self._split(tail)
        base = base_url.rstrip("/") if base_url else self.template.replace("{resource}", resource)
        stored = f"{base}{rest}"
        return Upstream(url=f"{stored}?{query_string}" if query_string else stored, stored_url=stored)

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        _, rest = self._split(tail)
        deployment = _DEPLOYMENT.match(rest)
        if deployment is not None:  # the body may leave the model to the deployment
            return self.read_request(method, deployment["operation"], body, model=deployment["deployment"],
                                     variant="deployment")
        v1 = _V1.match(rest)
        if v1 is not None:
            return self.read_request(method, v1["operation"], body, variant="v1")
        return PASS_THROUGH

    def prepare_body(self, request: RequestFacts, body: bytes) -> tuple[bytes, bool]:
        # Deployment routes take an api-version, and older ones reject stream_options: only
        # the v1 routes are asked for stream usage; otherwise missing usage is estimated.
        return super().prepare_body(request, body) if request.variant == "v1" else (body, False)
