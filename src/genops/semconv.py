"""Span attribute names: OpenTelemetry GenAI semantic conventions plus GenOps's own.

One place for every name, so the proxy, the storage materialized views
(storage/migrations/*.sql), dashboards and jobs agree. GenAI names follow the
OpenTelemetry GenAI conventions; ours live under ``genops.*``, never ``gen_ai.*``.
"""

# -- OpenTelemetry GenAI semantic conventions --------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_EVALUATION_RESULT_EVENT = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"  # attributes of the evaluation event
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_REQUEST_METHOD = "http.request.method"
URL_PATH = "url.path"

# -- GenOps's own (genops.*) ----------------------------------------------------------
GENOPS_REQUEST_ID = "genops.request.id"
GENOPS_ROUTE = "genops.route"  # the adapter that handled the call, e.g. "openai"
# gateway routing (issue #21): set on a call whose model named a configured route (docs/routing.md)
GENOPS_ROUTE_NAME = "genops.route.name"  # the route the client named as its model, e.g. "support-bot"
GENOPS_ROUTE_TARGET = "genops.route.target"  # the target that answered, "provider:model"
GENOPS_ROUTE_ATTEMPT = "genops.route.attempt"  # 1-based attempt that answered
GENOPS_ROUTE_REASON = "genops.route.reason"  # weighted | sticky | least-latency | fallback | retry | canary | promoted
GENOPS_ROUTE_VARIANT = "genops.route.variant"  # baseline | canary, while a rollout runs on the route
GENOPS_ROUTE_WAIT_MS = "genops.route.wait_ms"  # an attempt's wait before it was sent (backoff, Retry-After)
GENOPS_ROLLOUT_ID = "genops.rollout.id"
GENOPS_UPSTREAM_URL = "genops.upstream.url"  # query string removed (keys never stored)
GENOPS_COST_USD = "genops.cost.usd"  # absent when the price is unknown
GENOPS_COST_INPUT_USD = "genops.cost.input_usd"
GENOPS_COST_OUTPUT_USD = "genops.cost.output_usd"
GENOPS_COST_CACHE_SAVINGS_USD = "genops.cost.cache_savings_usd"  # what prompt-cache reads saved (> 0 only)
GENOPS_COST_UNKNOWN = "genops.cost.unknown"  # "true" when no price was found; reason in ..._reason
GENOPS_COST_UNKNOWN_REASON = "genops.cost.unknown_reason"
GENOPS_USAGE_ESTIMATED = "genops.usage.estimated"  # "true" when tokens were estimated, not reported
GENOPS_LATENCY_TTFT_MS = "genops.latency.ttft_ms"
GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND = "genops.latency.output_tokens_per_second"
GENOPS_LATENCY_UPSTREAM_MS = "genops.latency.upstream_ms"
GENOPS_STREAM_CHUNKS = "genops.stream.chunks"
GENOPS_RESPONSE_TOOL_CALLS = "genops.response.tool_calls"  # how many tool/function calls the model made
GENOPS_RESPONSE_TOOL_NAMES = "genops.response.tool_names"  # their names, in order
GENOPS_STREAM_USAGE_INJECTED = "genops.stream.usage_injected"
GENOPS_CLIENT_DISCONNECTED = "genops.client.disconnected"
GENOPS_REQUEST_BODY_BYTES = "genops.request.body_bytes"
GENOPS_RESPONSE_BODY_BYTES = "genops.response.body_bytes"
GENOPS_USER_ID = "genops.user.id"
GENOPS_SESSION_PATH = "genops.session.path"
GENOPS_SESSION_NAME = "genops.session.name"
GENOPS_PROMPT_ID = "genops.prompt.id"
GENOPS_PROMPT_VERSION = "genops.prompt.version"
GENOPS_PROPERTY_PREFIX = "genops.property."  # + the lower-cased property name
GENOPS_CONTEXT_TRUNCATED = "genops.context.truncated"  # "true" when a context value or property was capped
GENOPS_SAFETY_PII_COUNT = "genops.safety.pii.count"
GENOPS_SAFETY_SECRETS_COUNT = "genops.safety.secrets.count"
GENOPS_SAFETY_INJECTION_COUNT = "genops.safety.injection.count"
GENOPS_SAFETY_ACTION = "genops.safety.action"  # strictest action taken: none|annotate|redact|mask-upstream|block
GENOPS_SAFETY_SEVERITY = "genops.safety.severity"  # highest severity found: low|medium|high|critical
GENOPS_SAFETY_BLOCKED = "genops.safety.blocked"  # "true" when the proxy rejected the call
GENOPS_SAFETY_POLICY = "genops.safety.policy"  # effective policy, "pii=annotate,secrets=block,injection=annotate"
GENOPS_SAFETY_FINDINGS = "genops.safety.findings"  # JSON list: category, detector, location, span... never the text
GENOPS_SAFETY_FINDINGS_DROPPED = "genops.safety.findings_dropped"  # findings beyond the list's cap
GENOPS_SAFETY_DETECTORS = "genops.safety.detectors"  # detectors that fired
GENOPS_SAFETY_MASKED_UPSTREAM_COUNT = "genops.safety.masked_upstream.count"  # spans replaced before forwarding
GENOPS_SAFETY_INJECTION_INDIRECT_COUNT = "genops.safety.injection.indirect.count"  # in tool results
GENOPS_SAFETY_SCAN_MS = "genops.safety.scan_ms"
GENOPS_SAFETY_ERROR = "genops.safety.error"  # the scanner failed (the call went through)
GENOPS_SAFETY_CATEGORY = "genops.safety.category"  # on gen_ai.evaluation.result events
GENOPS_SAFETY_DETECTOR = "genops.safety.detector"
GENOPS_SAFETY_COUNT = "genops.safety.count"
GENOPS_CONTENT_INPUT_CHARS = "genops.content.input.chars"  # capture level metadata and up
GENOPS_CONTENT_OUTPUT_CHARS = "genops.content.output.chars"
GENOPS_CONTENT_INPUT_MESSAGES = "genops.content.input.messages"
GENOPS_CONTENT_TRUNCATED = "genops.content.truncated"  # captured messages were cut to the size cap
GENOPS_CONTENT_OMITTED = "genops.content.omitted"  # ["request"], ["response"]: GenOps-Omit-* headers

# Instrumentation scope of the proxy's own spans (genops_calls.ScopeName = this).
PROXY_SCOPE = "genops.proxy"
