"""Proxy latency under sustained load, with span export off, or on with the store in various places.

Modes (each a fresh ``genops serve`` against ``genops fake-upstream``, 0 ms upstream delay):
- ``off``: one process, spans not stored (``GENOPS_EXPORT_ENABLED=false``): the floor;
- ``inline``: embedded chDB in the proxy's own process (``GENOPS_STORE_PROCESS=inline``);
- ``separate``: the default on 2+ cores: the proxy in a worker process that hands JSONEachRow
  batches to the store process (``GENOPS_STORE_PROCESS=separate``);
- ``outproc``: the proxy stores nothing itself and exports OTLP (the SDK's exporter) to a
  ``genops collector`` process that owns chDB.

The load is open-loop: requests start at a fixed rate whatever the latency (so a stall
shows up in the tail instead of slowing the generator), from a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SMOKE_ENV, cpu_seconds, free_port, metric, start_process, stop_process, wait_http, wait_stored

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}).encode()


async def _load(url: str, rate: float, duration: float, warmup: float) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    # A bounded, reused pool: no connection churn (a dropped SYN costs a 1 s retransmit, not the proxy)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(record: bool) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.post(url, data=BODY, headers={"Content-Type": "application/json",
                                                                   "Authorization": "Bearer sk-bench"}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
                return
            if record:
                latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        total = int(rate * (duration + warmup))
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(record=i >= rate * warmup)))
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return latencies


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=1000, method="inclusive")
    return {"p50_ms": round(q[499] * 1000, 3), "p99_ms": round(q[989] * 1000, 3),
            "p999_ms": round(q[998] * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3)}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for task in os.listdir(f"/proc/{pid}/task")
                for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        return []


def run_mode(mode: str, rate: float, duration: float, warmup: float = 2.0, smoke: bool = False) -> dict:
    """One measurement; returns latency quantiles and the CPU the processes used (``smoke``: with
    :data:`~common.SMOKE_ENV`, for a run that only checks the bench works)."""
    root = Path(tempfile.mkdtemp(prefix=f"genops-bench-p99-{mode}-"))
    upstream_port, proxy_port, otlp_port = free_port(), free_port(), free_port()
    processes = []
    try:
        upstream = start_process(["fake-upstream", "--port", str(upstream_port)], {}, root / "upstream.log")
        processes.append(upstream)
        env = {"GENOPS_DATA_DIR": str(root / "proxy"), "GENOPS_PORT": str(proxy_port), "GENOPS_OTLP_PORT": "0",
               "GENOPS_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}", "GENOPS_LOG_LEVEL": "warning",
               **(SMOKE_ENV if smoke else {})}
        collector = None
        env["GENOPS_STORE_PROCESS"] = "separate" if mode == "separate" else "inline"
        if mode == "off":
            env["GENOPS_EXPORT_ENABLED"] = "false"
        elif mode == "outproc":
            collector = start_process(["collector"], {"GENOPS_DATA_DIR": str(root / "collector"),
                                                      "GENOPS_OTLP_PORT": str(otlp_port), "GENOPS_LOG_LEVEL": "warning"},
                                      root / "collector.log")
            processes.append(collector)
            wait_http(f"http://127.0.0.1:{otlp_port}/healthz", collector)
            env["GENOPS_EXPORT_ENABLED"] = "false"
            env["GENOPS_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        proxy = start_process(["serve"], env, root / "proxy" / "serve.log")
        processes.append(proxy)
        base = f"http://127.0.0.1:{proxy_port}"
        wait_http(base + "/healthz", proxy)
        wait_http(f"http://127.0.0.1:{upstream_port}/_fake/requests", upstream)
        time.sleep(0.5)  # the worker process, when separate
        workers = _children(proxy.pid)
        serving = workers or [proxy.pid]
        cpu_before = sum(cpu_seconds(p) for p in serving)
        store_before = cpu_seconds(proxy.pid) if workers else 0.0
        latencies = asyncio.run(_load(base + "/v1/chat/completions", rate, duration, warmup))
        sent = rate * (duration + warmup)
        result = {"mode": mode, "rate_rps": rate, "requests": len(latencies), **_quantiles(latencies),
                  "proxy_cpu_ms_per_request": round((sum(cpu_seconds(p) for p in serving) - cpu_before) * 1000 / sent, 3)}
        if workers:
            result["store_cpu_ms_per_request"] = round((cpu_seconds(proxy.pid) - store_before) * 1000 / sent, 3)
        if mode in ("inline", "separate"):
            wait_stored(base + "/metrics")
            result["spans_exported"] = int(metric(base, "genops_spans_exported_total"))
        return result
    finally:
        for process in reversed(processes):
            stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300, help="requests per second")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per mode")
    parser.add_argument("--modes", default="off,inline,separate,outproc")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the modes, interleaved, to average out noise")
    args = parser.parse_args()
    for _ in range(args.rounds):
        for mode in args.modes.split(","):
            print(json.dumps(run_mode(mode, args.rate, args.duration)), flush=True)


if __name__ == "__main__":
    main()
