"""The floor of GenOps's own HTTP exchange: its native server and upstream client, nothing between.

It reads a request, forwards it with hop-by-hop headers dropped and returns the whole answer:
no parsing, no routing, no safety, no span. What it costs per call is what GenOps's transport
costs; what ``genops serve`` costs above it is GenOps's own work per call
(``bench/decompose.py``). Non-streamed answers only: the decomposition drives chat calls.

    python bench/floor_proxy.py --port 8090 --upstream http://127.0.0.1:8091
"""

from __future__ import annotations

import argparse
import asyncio
import socket

from baseline import HOP  # the bare pass-through's hop-by-hop set: both drop the same headers
from multidict import CIMultiDict

from genops.proxy.upstream_client import UpstreamClient
from genops.runtime.http1.exchange import Http1Exchange
from genops.runtime.http1.server import Http1Server

MAX_BODY = 64 * 1024 * 1024


async def serve(port: int, upstream: str) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""
    client = UpstreamClient()

    async def dispatch(exchange: Http1Exchange) -> None:
        body = await exchange.read_body(MAX_BODY, 30.0)
        headers = CIMultiDict((k, v) for k, v in exchange.headers.items() if k.lower() not in HOP)
        answer = await client.request(exchange.method, upstream + exchange.target, data=body, headers=headers,
                                      total_timeout=60.0, connect_timeout=10.0)
        data = await answer.read()
        answer.release()
        out = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in HOP)
        await exchange.send(answer.status, out, data)

    server = Http1Server(dispatch, header_timeout_s=30.0, max_body_bytes=MAX_BODY)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    await server.listen(sock, 1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
