"""A fake model-API server for tests, demos and benchmarks (real APIs are not reachable offline).

Each provider module speaks that provider's exact wire format (JSON bodies, SSE events,
usage blocks, error bodies). Behaviour is steered per request with ``X-Fake-*`` headers,
which pass through the proxy untouched:

- ``X-Fake-Status: 429`` (or any 4xx/5xx): answer with that provider's error body;
- ``X-Fake-Delay-Ms: 200``: wait before answering (before the first chunk for streams);
- ``X-Fake-Chunk-Delay-Ms: 20``: wait between stream chunks;
- ``X-Fake-Cached-Tokens: 100`` / ``X-Fake-Reasoning-Tokens: 50``: report such usage
  (cache reads; reasoning/thinking tokens); ``X-Fake-Cache-Write-Tokens: 80``: cache writes (Anthropic);
- ``X-Fake-Drop-Usage: 1``: a stream with no usage at all.

``GET /_fake/requests`` returns what the server received (method, path, headers, body),
so tests can check exactly what reached the "provider".
"""
