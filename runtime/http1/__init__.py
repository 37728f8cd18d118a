"""GenOps's own HTTP/1.1 server for the proxy's public port (``GENOPS_HTTP_SERVER=native``).

Why not aiohttp.web: its per-request machinery (request and response classes, router, signals,
payload writer) made it cost 0.068 ms of CPU per request on this project's benchmark machine
where this server costs 0.040 ms, socket reads and writes included (bench/server_front.py); the
proxy needs a small part of a general server. The layers, as in httpx/httpcore:

- :mod:`.wire`: the bytes of a response head, aiohttp's rules for its headers (the reference);
- :mod:`.exchange`: one request as the proxy's client side (:mod:`genops.proxy.client_side`):
  its body as it arrives, its answer whole or streamed with flow control;
- :mod:`.connection`: one connection's protocol (httptools parses, as in uvicorn): keep-alive,
  pipelining in order, limits, the header timeout;
- :mod:`.server`: the listeners and the connections, for the drain (runtime/drain.py).

aiohttp.web stays the reference and the fallback (``GENOPS_HTTP_SERVER=aiohttp``); one
conformance suite (tests/test_server_conformance.py) runs against both.
"""
