"""The bare aiohttp pass-through (uvloop, no telemetry): the floor a Python proxy can reach."""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    session: dict[str, aiohttp.ClientSession] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with session["s"].request(request.method, args.upstream + request.path_qs, data=body,
                                        headers=headers) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
            if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
                response = web.StreamResponse(status=upstream.status, headers=out)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            return web.Response(status=upstream.status, body=await upstream.read(), headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    import uvloop

    uvloop.install()
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
