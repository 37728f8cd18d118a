"""A closed-loop HTTP/1.1 load generator (uvloop, keep-alive), run as its own process.

``--clients C`` connections each send the same request back to back for ``--duration`` seconds
(or ``--requests`` in total) and record every latency; for streams it records time to first
body byte and time to the last byte. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1], "mean": sum(ordered) / len(ordered)}


async def _read_response(reader: asyncio.StreamReader, started: int) -> tuple[int, int]:
    """Read one response; returns (first body byte ns, end ns)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if not head.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    if b"transfer-encoding: chunked" in lower:
        first = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            if not first:
                first = time.perf_counter_ns()
            size = int(size_line.strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return first, time.perf_counter_ns()
    at = lower.find(b"content-length:")
    length = int(lower[at + 15 : lower.find(b"\r\n", at)].strip())
    await reader.readexactly(length)
    end = time.perf_counter_ns()
    return end, end


async def run(host: str, port: int, path: str, body: bytes, clients: int, duration: float, requests: int,
              headers: dict[str, str]) -> dict:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    ttfb: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    remaining = [requests]

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline and (requests <= 0 or remaining[0] > 0):
                remaining[0] -= 1
                started = time.perf_counter_ns()
                writer.write(request)
                try:
                    first, end = await _read_response(reader, started)
                except (RuntimeError, asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append((end - started) / 1e3)
                ttfb.append((first - started) / 1e3)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "latency_us": percentiles(latencies),
        "ttfb_us": percentiles(ttfb),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="http://host:port/path")
    parser.add_argument("--body", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    from urllib.parse import urlsplit

    parts = urlsplit(args.url)
    headers = dict(h.split(":", 1) for h in args.header)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(parts.hostname, parts.port, parts.path, args.body.encode(), args.clients,
                             args.duration, args.requests, {k.strip(): v.strip() for k, v in headers.items()}))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
