"""Fake Azure OpenAI: ``/azure/{resource}/openai/deployments/{deployment}/...?api-version=`` and
``/azure/{resource}/openai/v1/...``; point ``GENOPS_AZURE_BASE_URL`` at
``http://host:port/azure/{resource}``.

Bodies and streams are the fake OpenAI's (Azure speaks the same format); authentication
(``api-key``), the ``api-version`` requirement and error bodies are Azure's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from genops.fake_upstream import openai
from genops.fake_upstream.common import Controls, dumps, record

ERRORS = {
    401: ("401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                 "key for an active subscription and use a correct regional API endpoint for your resource."),
    404: ("DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment "
                                "within the last 5 minutes, please wait a moment and try again."),
    429: ("429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
                 "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds."),
    500: ("InternalServerError", "The server had an error while processing your request."),
}


def error_response(status: int, code: str | None = None, message: str | None = None) -> web.Response:
    """An error exactly as Azure OpenAI sends it."""
    default_code, default_message = ERRORS.get(status, (str(status), "Error."))
    headers = {"apim-request-id": "00000000-fake-azure-error", "x-ms-region": "Sweden Central"}
    if status == 429:
        headers["retry-after"] = "6"
    body = {"error": {"code": code or default_code, "message": message or default_message}}
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _azure(handler: Handler, *, needs_api_version: bool) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        status = Controls.from_request(request).status
        if not (request.headers.get("api-key") or request.headers.get("Authorization", "").startswith("Bearer ")):
            await record(request)
            return error_response(401)
        if needs_api_version and not request.query.get("api-version"):
            await record(request)
            return error_response(404, "404", "Resource not found")
        if status >= 400:
            await record(request)
            return error_response(status)
        return await handler(request)

    return wrapped


def register(app: web.Application, prefix: str = "") -> None:
    """Mount the fake Azure OpenAI routes under ``prefix``."""
    routes = {"/chat/completions": openai.chat_completions, "/completions": openai.completions,
              "/embeddings": openai.embeddings, "/responses": openai.responses}
    base = prefix + "/azure/{resource}/openai"
    for path, handler in routes.items():
        app.router.add_post(base + "/deployments/{deployment}" + path, _azure(handler, needs_api_version=True))
        app.router.add_post(base + "/v1" + path, _azure(handler, needs_api_version=False))
