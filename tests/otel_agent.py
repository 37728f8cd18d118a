"""A small instrumented agent, run as its own process by test_one_trace_tree.py.

``python otel_agent.py {openllmetry|openai-v2} PROXY_URL OTLP_URL SERVICE`` opens
``invoke_agent`` / ``execute_tool`` spans with the plain OpenTelemetry SDK, calls a model
with the ``openai`` SDK through the proxy (instrumented by the named PyPI package),
exports every span by OTLP/HTTP and prints JSON: trace id and the proxy's response headers.
Instrumentation patches the ``openai`` module process-wide, hence one process per run.
"""

from __future__ import annotations

import sys

import openai
import orjson
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind


def main(kind: str, proxy_url: str, otlp_url: str, service: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url + "/v1/traces")))
    http_client = None
    if kind == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)  # it sends its span's traceparent itself
    else:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)

        # openai-v2 makes its span current around the HTTP call but leaves propagation to an
        # HTTP-client instrumentation; this request hook is that instrumentation's one job.
        def propagate(request) -> None:
            inject(request.headers, context=otel_context.get_current())

        http_client = openai.DefaultHttpxClient(event_hooks={"request": [propagate]})
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key="sk-test", max_retries=0, http_client=http_client)
    tracer = provider.get_tracer("my.agent", "0.1")
    with tracer.start_as_current_span("invoke_agent researcher", kind=SpanKind.INTERNAL,
                                      attributes={"gen_ai.operation.name": "invoke_agent",
                                                  "gen_ai.agent.name": "researcher"}) as agent:
        with tracer.start_as_current_span("execute_tool web_search", kind=SpanKind.INTERNAL,
                                          attributes={"gen_ai.operation.name": "execute_tool",
                                                      "gen_ai.tool.name": "web_search"}):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Summarise the results."}])
    provider.shutdown()  # flushes the OTLP exporter
    print(orjson.dumps({
        "trace_id": format(agent.get_span_context().trace_id, "032x"),
        "traceparent": raw.headers.get("traceparent", ""),
        "request_id": raw.headers.get("GenOps-Request-Id", ""),
    }).decode())


if __name__ == "__main__":
    main(*sys.argv[1:5])
