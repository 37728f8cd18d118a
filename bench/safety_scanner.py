"""Cost of the safety scanner per KB of text, and its effect on proxy latency.

    .venv/bin/python bench/safety_scanner.py            # scanner cost only (seconds)
    .venv/bin/python bench/safety_scanner.py --proxy    # also latency through a real proxy

Scanner cost: best of several runs per text kind (prose, source code, chat with personal data,
a 1 MB prompt), per category and for the default detectors together (target <= 0.3 ms/KB).
Proxy: sequential chat calls through ``genops serve`` against the fake upstream with the
policy ``off`` vs ``annotate`` vs ``block`` (block scans before forwarding), and the latency
of small calls made while 1 MB prompts are being scanned (the event loop must stay free).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from genops.proxy.safety.scanner import scan_text

PROSE = ("The quarterly report shows revenue grew 12% to $4.5 million in Q3 2024, with 1,234 new customers. "
         "Please review the attached summary and send feedback by Friday. Our team met on 2024-03-15 at 10:30 "
         "to discuss version 2.1.0 of the API and the migration plan; the previous instructions in the wiki "
         "are out of date, so ignore the old diagrams. ")
CODE = ("def handler(request):\n    user = request.json()['user_id']\n    token = settings.API_TOKEN\n"
        "    for i in range(0, 1024, 16):\n        buf[i:i+16] = data[i:i+16] ^ 0x5f\n"
        "    return {'status': 200, 'id': '550e8400-e29b-41d4-a716-446655440000', 'ver': '1.2.3.4'}\n")
CHAT = ("Hi, I'm Maria (maria.lopez@example.org, +44 20 7946 0958). My card 4111 1111 1111 1111 was charged "
        "twice on order 123456789. Can you refund it to GB82 WEST 1234 5698 7654 32? Thanks! ")


def _text(kind: str, size: int) -> str:
    unit = {"prose": PROSE, "code": CODE, "chat": CHAT}[kind]
    return (unit * (size // len(unit) + 1))[:size]


def scanner_cost(repeats: int = 7) -> None:
    print(f"scanner cost (best of {repeats}, thread CPU time), ms per KB")
    print(f"{'text':<14} {'pii':>7} {'secrets':>8} {'injection':>10} {'all':>7}")
    for kind, size in (("prose", 64_000), ("code", 64_000), ("chat", 64_000), ("prose 1 MB", 1_000_000)):
        text = _text(kind.split()[0], size)
        row = []
        for categories in (("pii",), ("secrets",), ("injection",), ("pii", "secrets", "injection")):
            best = float("inf")
            for _ in range(repeats if size < 500_000 else 3):
                # CPU time of this thread: what the scan costs, not what other processes take.
                started = time.thread_time()
                scan_text(text, categories)
                best = min(best, time.thread_time() - started)
            row.append(best * 1000 / (size / 1024))
        print(f"{kind:<14} {row[0]:>7.3f} {row[1]:>8.3f} {row[2]:>10.3f} {row[3]:>7.3f}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_upstream() -> str:
    from aiohttp import web

    from genops.fake_upstream.server import create_app

    port = _free_port()
    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(create_app(), access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return f"http://127.0.0.1:{port}"


async def _latencies(url: str, policy: str, n: int, prompt: str) -> list[float]:
    import aiohttp

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=body,
                                    headers={"Authorization": "Bearer sk-bench", "GenOps-Safety-Policy": policy}) as r:
                await r.read()
            out.append((time.perf_counter() - started) * 1000)
    return out


async def _under_big_scans(url: str, n_small: int) -> tuple[list[float], float]:
    big = asyncio.gather(*(_latencies(url, "block", 2, _text("prose", 1_000_000)) for _ in range(2)))
    small = _latencies(url, "block", n_small, CHAT[:200])
    started = time.perf_counter()
    big_result, small_result = await asyncio.gather(big, small)
    return small_result, (time.perf_counter() - started) * 1000


def proxy_latency(n: int) -> None:
    upstream = _fake_upstream()
    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix="genops-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update({"GENOPS_PORT": str(port), "GENOPS_DATA_DIR": data_dir, "GENOPS_OPENAI_BASE_URL": upstream,
                "GENOPS_SAFETY_POLICY": "off", "GENOPS_LOG_LEVEL": "warning"})
    proc = subprocess.Popen([sys.executable, "-m", "genops", "serve"], env=env, cwd=data_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        print(f"\nproxy latency, {n} sequential chat calls (ms): median / p95")
        for policy in ("off", "annotate", "block"):
            for prompt_kind, prompt in (("1 KB chat", _text("chat", 1024)), ("32 KB chat", _text("chat", 32_768))):
                lat = asyncio.run(_latencies(url, policy, n, prompt))
                p95 = statistics.quantiles(lat, n=20)[-1]
                print(f"  policy {policy:<9} {prompt_kind:<10} {statistics.median(lat):7.2f} / {p95:7.2f}")
        base = asyncio.run(_latencies(url, "block", n, CHAT[:200]))
        small, _ = asyncio.run(_under_big_scans(url, n))
        print(f"\nsmall calls (policy block): alone median {statistics.median(base):.2f} ms, max {max(base):.2f} ms; "
              f"while four 1 MB prompts are scanned: median {statistics.median(small):.2f} ms, max {max(small):.2f} ms")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", action="store_true", help="also measure latency through a real proxy")
    parser.add_argument("-n", type=int, default=100, help="calls per proxy measurement")
    args = parser.parse_args()
    scanner_cost()
    if args.proxy:
        proxy_latency(args.n)


if __name__ == "__main__":
    main()
