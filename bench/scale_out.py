"""Scale-out benchmark: GenOps proxies exporting over OTLP (``GENOPS_EXPORTER=otlp``) into one ``genops collector``.

Two measurements, each printed as one JSON line (docs/scale-out.md has the figures and the sizing rule):

``collector``: how many proxy spans one collector stores per second and per CPU-second. Real
proxy export requests are captured first (a ``genops serve`` with the OTLP exporter, behind
the fake upstream, exporting to a capture endpoint), then posted to a fresh collector on
embedded chDB from ``--senders`` connections at once, as that many proxies would (trusted
token, a fresh ``GenOps-Dedup-Token`` each), until every span is inserted. Reported: spans/s
(wall, from the first request to the last insert), the collector's CPU-seconds and spans per
CPU-second (its whole process: receiving, decoding, spooling, inserting and ClickHouse's work,
merges during the run included), peak memory.

``e2e``: ``--proxies`` real proxies, each driven by its own closed-loop load generator for
``--duration`` seconds, exporting to one collector; every call's span is then counted in the
collector's store (exactly once). Reported: calls/s, collector CPU per span, proxy CPU per call.
On a small machine everything shares the same cores: the collector figure of ``collector`` is
the one to size with.

    python bench/scale_out.py                    # both (~1-2 min)
    python bench/scale_out.py --only collector --senders 8 --requests 400
    python bench/scale_out.py --smoke            # tiny loads, to check it runs
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, free_port, metric, peak_rss_mb, start_process, stop_process, thread_cpu_seconds, wait_http

HERE = Path(__file__).resolve().parent
TOKEN = "bench-trusted-" + uuid.uuid4().hex
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]})
EXPORTED = "genops_otlp_idempotent_spans_exported_total"


def _serve_capture(port: int, bodies: list[bytes]) -> None:
    """An OTLP endpoint that keeps every request body (gunzipped) and answers 200."""
    from aiohttp import web

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1 << 26, handler_args={"auto_decompress": False})
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/healthz", healthz)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    loop.run_forever()


def start_upstream(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start_process(["fake-upstream", "--port", str(port)], {}, work / "upstream.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_fake/requests", process)
    return process, url


def start_proxy(work: Path, name: str, upstream: str, endpoint: str, extra: dict[str, str] | None = None
                ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"GENOPS_DATA_DIR": str(work / name), "GENOPS_PORT": str(port), "GENOPS_OTLP_PORT": "0",
           "GENOPS_OPENAI_BASE_URL": upstream, "GENOPS_EXPORTER": "otlp", "GENOPS_OTLP_ENDPOINT": endpoint,
           "GENOPS_OTLP_TRUSTED_TOKEN": TOKEN, "GENOPS_LOG_LEVEL": "warning", "GENOPS_STORE_PROCESS": "inline",
           **(extra or {})}
    process = start_process(["serve"], env, work / name / "serve.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", process)
    return process, url


def start_collector(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"GENOPS_DATA_DIR": str(work / "collector"), "GENOPS_OTLP_PORT": str(port),
           "GENOPS_OTLP_TRUSTED_TOKEN": TOKEN, "GENOPS_LOG_LEVEL": "warning"}
    process = start_process(["collector"], env, work / "collector" / "collector.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", process)
    return process, url


def loadgen(url: str, clients: int, duration: float = 600.0, requests: int = 0) -> dict:
    """Closed-loop load on a proxy for ``duration`` seconds, or until ``requests`` in total."""
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url + "/v1/chat/completions", "--body", CHAT,
           "--clients", str(clients), "--duration", str(duration), "--requests", str(requests)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def capture(work: Path, calls: int, batch_spans: int) -> list[bytes]:
    """Export requests of a real proxy (``batch_spans`` spans each at most) for ``calls`` chat calls."""
    bodies: list[bytes] = []
    port = free_port()
    threading.Thread(target=_serve_capture, args=(port, bodies), daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/healthz")
    upstream, upstream_url = start_upstream(work)
    proxy, url = start_proxy(work, "capture-proxy", upstream_url, endpoint,
                             {"GENOPS_EXPORT_BATCH_SIZE": str(batch_spans), "GENOPS_EXPORT_INTERVAL_MS": "200"})
    try:
        loadgen(url, clients=4, requests=calls)
        deadline = time.monotonic() + 60
        while metric(url, "genops_spool_spans") or metric(url, "genops_export_queue_spans"):
            if time.monotonic() > deadline:
                raise RuntimeError("the capture proxy did not export")
            time.sleep(0.1)
    finally:
        stop_process(proxy)
        stop_process(upstream)
    return [body for body in bodies if body]


def span_count(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def bench_collector(senders: int, requests: int, batch_spans: int) -> dict:
    """Many proxies' export requests into one collector (see the module doc)."""
    work = Path(tempfile.mkdtemp(prefix="genops-bench-scale-"))
    bodies = capture(work, calls=max(batch_spans * 8, 200), batch_spans=batch_spans)
    sizes = [span_count(body) for body in bodies]
    full = [(gzip.compress(body, 1), n) for body, n in zip(bodies, sizes, strict=True) if n >= batch_spans // 2] or \
        [(gzip.compress(body, 1), n) for body, n in zip(bodies, sizes, strict=True)]
    collector, url = start_collector(work)
    try:
        total = sum(full[i % len(full)][1] for i in range(requests))
        cpu_before = cpu_seconds(collector.pid)
        threads_before = thread_cpu_seconds(collector.pid)
        started = time.perf_counter()
        errors: list[str] = []
        retries = [0]

        def sender(worker: int) -> None:
            for i in range(worker, requests, senders):
                body, _spans = full[i % len(full)]
                token = uuid.uuid4().hex
                request = urllib.request.Request(url + "/v1/traces", data=body, headers={
                    "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                    "Authorization": f"Bearer {TOKEN}", "GenOps-Dedup-Token": token})
                for _attempt in range(600):
                    try:
                        with urllib.request.urlopen(request, timeout=60) as response:
                            response.read()
                        break
                    except urllib.error.HTTPError as exc:
                        if exc.code != 503:
                            errors.append(f"HTTP {exc.code}: {exc.read()[:200]!r}")
                            return
                        retries[0] += 1
                        time.sleep(0.1)

        threads = [threading.Thread(target=sender, args=(w,)) for w in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted_at = time.perf_counter()
        if errors:
            raise RuntimeError(f"requests failed: {errors[:3]}")
        while metric(url, EXPORTED) < total:
            if time.perf_counter() - started > 900:
                raise RuntimeError("spans not inserted within 900 s")
            time.sleep(0.05)
        stored_at = time.perf_counter()
        cpu = cpu_seconds(collector.pid) - cpu_before
        by_thread = {name: round(cpu_s - threads_before.get(name, 0.0), 2)
                     for name, cpu_s in thread_cpu_seconds(collector.pid).items()}
        wall = stored_at - started
        return {
            "bench": "scale_out_collector", "senders": senders, "requests": requests, "spans": total,
            "spans_per_request": round(total / requests, 1),
            "request_bytes_gzip": round(sum(len(full[i % len(full)][0]) for i in range(requests)) / requests),
            "wall_s": round(wall, 2), "spans_per_s_wall": round(total / wall),
            "accept_spans_per_s": round(total / (accepted_at - started)),
            "collector_cpu_s": round(cpu, 2), "spans_per_cpu_second": round(total / cpu) if cpu else None,
            "collector_cpu_us_per_span": round(cpu / total * 1e6, 1),
            "busy_503_retries": retries[0],
            "duplicates_answered": metric(url, 'genops_otlp_idempotent_requests_total{outcome="duplicate"}'),
            "peak_rss_mb": peak_rss_mb(collector.pid), "cores": os.cpu_count(),
            # where the CPU went, by thread name (the event loop; the executor decoding requests;
            # the spool's sender inserting; ClickHouse's pools)
            "cpu_s_by_thread": dict(sorted(((n, c) for n, c in by_thread.items() if c >= 0.05), key=lambda i: -i[1])),
            "load_average": os.getloadavg()[0],
        }
    finally:
        stop_process(collector)


def stored_calls(collector_dir: Path) -> tuple[int, int]:
    """(spans, distinct request ids) of the proxies' calls in the stopped collector's store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    done = subprocess.run([sys.executable, "-m", "genops", "sql", "--data-dir", str(collector_dir), "--format", "json",
                           "SELECT count() AS n, uniqExact(TraceId, SpanId) AS ids FROM otel_traces "
                           "WHERE ScopeName = 'genops.proxy'"], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    row = json.loads(done.stdout)[0]
    return int(row["n"]), int(row["ids"])


def bench_e2e(proxies: int, clients: int, duration: float) -> dict:
    """``proxies`` real proxies under load, exporting to one collector (see the module doc)."""
    work = Path(tempfile.mkdtemp(prefix="genops-bench-e2e-"))
    collector, collector_url = start_collector(work)
    upstream, upstream_url = start_upstream(work)
    started_proxies = [start_proxy(work, f"proxy-{i}", upstream_url, collector_url) for i in range(proxies)]
    try:
        collector_cpu = cpu_seconds(collector.pid)
        proxy_cpu = [cpu_seconds(p.pid) for p, _ in started_proxies]
        results: list[dict] = []
        threads = [threading.Thread(target=lambda u=url: results.append(loadgen(u, clients, duration)))
                   for _, url in started_proxies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = sum(r.get("requests", 0) for r in results)
        errors = sum(r.get("errors", 0) for r in results)
        for _, url in started_proxies:
            while metric(url, "genops_spool_spans") or metric(url, "genops_export_queue_spans"):
                time.sleep(0.1)
        while metric(collector_url, "genops_otlp_idempotent_spool_spans"):
            time.sleep(0.1)
        collector_cpu = cpu_seconds(collector.pid) - collector_cpu
        proxy_cpu = sum(cpu_seconds(p.pid) - before for (p, _), before in zip(started_proxies, proxy_cpu, strict=True))
    finally:
        for process, _ in started_proxies:
            stop_process(process)
        stop_process(upstream)
        stop_process(collector)
    spans, distinct = stored_calls(work / "collector")
    return {
        "bench": "scale_out_e2e", "proxies": proxies, "clients_per_proxy": clients, "duration_s": duration,
        "calls": calls, "errors": errors, "calls_per_s": round(calls / duration),
        "stored_spans": spans, "distinct_spans": distinct, "exactly_once": spans == distinct == calls,
        "collector_cpu_s": round(collector_cpu, 2),
        "collector_cpu_us_per_span": round(collector_cpu / spans * 1e6, 1) if spans else None,
        "proxy_cpu_us_per_call": round(proxy_cpu / calls * 1e6, 1) if calls else None,
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("collector", "e2e"))
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders (proxies) into the collector")
    parser.add_argument("--requests", type=int, default=400, help="export requests posted to the collector")
    parser.add_argument("--batch-spans", type=int, default=200, help="spans per export request (a proxy's batch)")
    parser.add_argument("--proxies", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="load generator connections per proxy")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="tiny loads, to check it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.batch_spans, args.senders, args.duration, args.clients = 20, 20, 2, 1.0, 1
    results = []
    if args.only in (None, "collector"):
        results.append(bench_collector(args.senders, args.requests, args.batch_spans))
        print(json.dumps(results[-1]), flush=True)
    if args.only in (None, "e2e"):
        results.append(bench_e2e(args.proxies, args.clients, args.duration))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
