"""CPU per request of each of the worker's HTTP servers alone: aiohttp.web and the native one
(runtime/http1/), each answering a fixed 591-byte JSON body to a POST of the benchmark's chat request.

No proxying, no telemetry: what the server itself costs a call (parsing, the request and answer
objects, routing to one handler, writing), the part GENOPS_HTTP_SERVER chooses. Each server runs in
its own process on core 0 with uvloop, the load generator (bench/loadgen.py) on core 1; the servers
are measured alternately, and each figure is the server process's CPU time over the requests it
answered.

    .venv/bin/python bench/server_front.py                  # 3 rounds of 5 s at 50 clients
    .venv/bin/python bench/server_front.py --rounds 5 --clients 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import free_port  # noqa: E402
from proxy_bench import BODY, PATH  # noqa: E402
from upstream import COMPLETION  # noqa: E402

SERVERS = ("aiohttp", "native")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def serve(kind: str, port: int) -> None:
    """Run one server until killed (the child process)."""
    import asyncio
    import socket

    import uvloop
    from aiohttp import web
    from multidict import CIMultiDict

    from genops.runtime.http1.server import Http1Server

    uvloop.install()

    async def main() -> None:
        if kind == "aiohttp":
            async def answer(request: web.Request) -> web.Response:
                await request.read()
                return web.Response(body=COMPLETION, headers={"Content-Type": "application/json"})

            app = web.Application()
            app.router.add_post(PATH, answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        else:
            async def dispatch(exchange) -> None:  # noqa: ANN001 - Http1Exchange
                await exchange.read_body(1 << 20, 10.0)
                await exchange.send(200, CIMultiDict({"Content-Type": "application/json"}), COMPLETION)

            server = Http1Server(dispatch, header_timeout_s=60.0, max_body_bytes=1 << 20)
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            await server.listen(sock, 2048)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    ports = {kind: free_port() for kind in SERVERS}
    procs = {kind: subprocess.Popen([*pin(0), sys.executable, __file__, "--serve", kind, "--port", str(ports[kind])],
                                    stdout=subprocess.PIPE, text=True) for kind in SERVERS}
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        results: dict[str, list[float]] = {kind: [] for kind in SERVERS}
        for round_ in range(args.rounds):
            for kind in SERVERS:
                url = f"http://127.0.0.1:{ports[kind]}{PATH}"
                before = cpu_ticks(procs[kind].pid)
                out = subprocess.run([*pin(1), sys.executable, str(HERE / "loadgen.py"), "--url", url, "--body", BODY,
                                      "--clients", str(args.clients), "--duration", str(args.duration)],
                                     capture_output=True, text=True, check=True)
                time.sleep(0.2)
                load = json.loads(out.stdout)
                ms = (cpu_ticks(procs[kind].pid) - before) / CLK_TCK * 1000 / max(1, load["requests"])
                results[kind].append(ms)
                print(f"round {round_ + 1}: {kind:8s} {load['rps']:8,.0f} requests/s  {ms:.4f} ms CPU per request",
                      file=sys.stderr, flush=True)
        medians = {kind: sorted(values)[len(values) // 2] for kind, values in results.items()}
        print(json.dumps({"clients": args.clients, "cpu_ms_per_request": results, "median": medians,
                          "native_vs_aiohttp": medians["native"] / medians["aiohttp"]}))
    finally:
        for proc in procs.values():
            proc.kill()


if __name__ == "__main__":
    main()
