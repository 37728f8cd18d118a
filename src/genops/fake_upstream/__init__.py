"""A fake model-API server for tests, demos and benchmarks (real APIs are not reachable offline).

Each provider module speaks that provider's exact wire format (JSON bodies, SSE events,
usage blocks, error bodies). Behaviour is steered per request with ``X-Fake-*`` headers,
which pass through the proxy untouched:

- ``X-Fake-Status: 429`` (or any 4xx/5xx): answer with that provider's error body;
- ``X-Fake-Delay-Ms: 200``: wait before answering (before the first chunk for streams);
- ``X-Fake-Chunk-Delay-Ms: 20``: wait between stream chunks;
- ``X-Fake-Cached-Tokens: 100`` / ``X-Fake-Reasoning-Tokens: 50``: report such usage
  (cache reads; reasoning/thinking tokens); ``X-Fake-Cache-Write-Tokens: 80``: cache writes (Anthropic);
- ``X-Fake-Drop-Usage: 1``: a stream with no usage at all;
- ``X-Fake-Error-Rate: 0.2``, optionally with ``X-Fake-Error-Model: claude-haiku-4-5``: that share
  of the requests for the model (every model without ``X-Fake-Error-Model``) answers 500 with the
  provider's error body, deterministically: the server counts requests per model and fails those
  where ``floor(n * rate)`` steps up (0.2: the 5th, 10th, 15th...), so a route's canary target can
  fail while its baseline, through the same server and headers, stays healthy. OpenAI (chat,
  completions, responses, embeddings; Azure answers with OpenAI's body), Anthropic (also on
  Vertex) and Gemini (also on Vertex). ``DELETE /_fake/requests`` restarts the counts.
  ``X-Fake-Error-Status: 429`` makes those failures that status instead (OpenAI's 429 carries
  ``retry-after: 1``);
- ``X-Fake-Delay-Model: gpt-4o``: ``X-Fake-Delay-Ms`` applies to that model's requests only.

Tool use speaks each format too: a user turn with tools gets one call to the first tool (or the
one the tool choice names), arguments sampled from its JSON schema (OpenAI ``tool_calls`` and
Responses ``function_call`` items, Anthropic ``tool_use`` blocks, Gemini ``functionCall`` parts,
streamed as each API streams them); a turn of tool results gets a text reply quoting them; JSON
modes (``response_format``, ``text.format``, ``output_config.format``, ``responseMimeType``)
answer JSON with the schema's required properties. Embeddings come in the model's real size
(``dimensions`` / ``outputDimensionality`` honoured), as floats or base64 float32.

``GET /_fake/requests`` returns what the server received (method, path, headers, body),
so tests can check exactly what reached the "provider".
"""
