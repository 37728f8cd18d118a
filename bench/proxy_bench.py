"""Proxy overhead benchmark: direct vs bare aiohttp pass-through vs GenOps, side by side.

One command starts a canned fast upstream, the bare pass-through baseline and ``genops serve``
(every default feature on: spans, cost, export to the embedded store), then drives each with a
load generator in its own process (Debian's ``wrk`` for throughput where installed, else the
uvloop client in bench/loadgen.py). Proxies are pinned to core 0 (every GenOps process, the store
included), upstream and load generator to core 1 (when ``taskset`` and two cores exist).

    python bench/proxy_bench.py                 # full run (~2 min)
    python bench/proxy_bench.py --smoke         # a few seconds, for the test suite
    python bench/proxy_bench.py --soak 1000000  # memory/latency flatness over N requests
    python bench/proxy_bench.py --bodies        # MB/s of 1, 16 and 64 MB non-streamed answers
    python bench/proxy_bench.py --bodies --genops-env GENOPS_UPSTREAM_CLIENT=aiohttp

Reported: added latency p50/p90/p99 at 1, 10 and 50 clients (vs direct), requests/s per proxy
core, streaming time to first byte and full-stream time, CPU time per request, RSS idle and
loaded, and each figure as a ratio to the bare pass-through. The targets take turns at each client
count, so the runs compared are seconds apart; ``--repeat N`` prints issue #22's figures as medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import SMOKE_ENV, wait_stored  # bench/'s own helpers, next to this script

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]})
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True})
PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The name of the same GenOps with its telemetry export off (what export costs, measured in the same run).
NO_EXPORT = "genops-noexport"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) and, with ``tree``, its descendants."""
    total = 0.0
    for p in tree_pids(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def status_mb(pids: list[int], field: str) -> float:
    """The sum of one ``/proc/<pid>/status`` memory field (e.g. ``VmRSS``) over ``pids``, in MB."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def rss_mb(pid: int, tree: bool = True) -> float:
    return status_mb(tree_pids(pid) if tree else [pid], "VmRSS")


def shmem_mb(pids: list[int]) -> float:
    """Shared memory in RSS (``RssShmem``): the span export's buffers, anonymous shared mappings."""
    return status_mb(pids, "RssShmem")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def loadgen(url: str, body: str, clients: int, duration: float, requests: int = 0) -> dict:
    cmd = [*pin(1), sys.executable, str(HERE / "loadgen.py"), "--url", url, "--body", body,
           "--clients", str(clients), "--duration", str(duration), "--requests", str(requests)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration * 4 + 600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrk(url: str, body: str, clients: int, duration: float) -> dict:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
                 'wrk.headers["Authorization"] = "Bearer sk-bench"\n')
    script.close()
    cmd = [*pin(1), "wrk", "-t1", f"-c{clients}", f"-d{max(1, int(duration))}s", "--latency", "-s", script.name, url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 120).stdout
    os.unlink(script.name)

    def to_us(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
        return float(number) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

    dist = {m.group(1): to_us(m.group(2)) for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|errors: connect|read|write|timeout) (\d+)", out))
    return {"clients": clients, "requests": requests, "errors": errors,
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "latency_us": {"p50": dist.get("50"), "p90": dist.get("90"), "p99": dist.get("99")}, "tool": "wrk"}


class Target:
    def __init__(self, name: str, url: str, process: subprocess.Popen | None) -> None:
        self.name, self.url, self.process = name, url, process

    def proxy_pids(self) -> list[int]:
        """The processes serving the port: genops's workers when the store runs apart, else the process."""
        if self.process is None:
            return []
        children = [p for p in tree_pids(self.process.pid) if p != self.process.pid]
        return children or [self.process.pid]

    def store_pid(self) -> int | None:
        """genops's supervisor (the embedded store) when it runs apart from the proxy workers."""
        if self.process is None or self.proxy_pids() == [self.process.pid]:
            return None
        return self.process.pid


def pin_genops(target: Target) -> str:
    """Every GenOps process (proxy workers and the store process) on core 0, like the baseline.

    #22 measures per core: all of a proxy's processes share one core while load and upstream
    have the other. A store process on the load generator's core would take its CPU from the
    load generator and the upstream instead, and show up as their latency, not GenOps's.
    """
    if not pin(0):
        return "none"
    for pid in target.proxy_pids():
        subprocess.run(["taskset", "-apc", "0", str(pid)], capture_output=True, check=False)
    store = target.store_pid()
    if store is not None:
        subprocess.run(["taskset", "-apc", "0", str(store)], capture_output=True, check=False)
        return "genops proxy worker and its store process on core 0"
    return "genops (store inline) on core 0"


def serve_env(args: argparse.Namespace, upstream_url: str, port: int, data_dir: Path) -> dict[str, str]:
    """The settings of the measured ``genops serve``: every default, plus :data:`~common.SMOKE_ENV` on
    ``--smoke`` and the user's ``--genops-env`` last."""
    env = {"GENOPS_OPENAI_BASE_URL": upstream_url, "GENOPS_PORT": str(port), "GENOPS_DATA_DIR": str(data_dir),
           "GENOPS_LOG_LEVEL": "warning", **(SMOKE_ENV if args.smoke else {})}
    env.update(dict(kv.split("=", 1) for kv in args.genops_env))
    return env


def start(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


def _warm(target: Target) -> dict:
    """Warm ``target`` up (connections, caches) and start its result with its idle memory."""
    loadgen(target.url + PATH, BODY, 4, 1.0)
    result: dict = {"runs": {}}
    if target.process is not None:
        result["rss_idle_mb"] = sum(rss_mb(p) for p in target.proxy_pids())
        store = target.store_pid()
        if store:
            result["store_rss_idle_mb"] = rss_mb(store, tree=False)
    return result


def _run(target: Target, clients: int, duration: float, use_wrk: bool, drain: bool) -> dict:
    """One run of ``target`` at ``clients``, with the CPU per request of its processes. With ``drain``
    (GenOps with export on) the CPU is read once the store has inserted the run's spans."""
    url = target.url + PATH
    proxies, store = target.proxy_pids(), target.store_pid()

    def proxy_cpu() -> float:
        return sum(cpu_seconds(p) for p in proxies)

    measured = target.process is not None
    cpu0 = proxy_cpu() if measured else 0.0
    store0 = cpu_seconds(store, tree=False) if store else 0.0
    run = loadgen(url, BODY, clients, duration)
    if use_wrk and clients >= 10:
        latency_run = run
        run = wrk(url, BODY, clients, duration)
        run["python_client_latency_us"] = latency_run["latency_us"]
        cpu_requests = run["requests"] + latency_run["requests"]
    else:
        cpu_requests = run["requests"]
    if drain:
        run["store_drain_s"] = wait_stored(target.url + "/metrics")
    if measured:
        run["cpu_ms_per_request"] = (proxy_cpu() - cpu0) * 1000 / max(1, cpu_requests)
    if store:
        run["store_cpu_ms_per_request"] = (cpu_seconds(store, tree=False) - store0) * 1000 / max(1, cpu_requests)
    return run


def _stream(target: Target, duration: float) -> dict:
    stream = loadgen(target.url + PATH, STREAM_BODY, 1, duration)
    return {"ttfb_us": stream["ttfb_us"], "full_us": stream["latency_us"], "requests": stream["requests"]}


def measure(targets: list[Target], clients: list[int], duration: float, use_wrk: bool, rep: int = 0) -> dict:
    """One repetition: at each client count every target in turn, then each target's stream run.

    The targets take turns per measurement (not one target's whole series, then the next's): on a
    shared VM whose speed drifts within a minute, the figures compared (GenOps against the bare
    pass-through at one client count) are then taken seconds apart. Odd repetitions take the
    proxies in reverse order, so neither is always measured first.
    """
    order = list(targets)
    if rep % 2:
        order = order[:1] + order[:0:-1]  # "direct" (the upstream alone) stays first
    results = {t.name: _warm(t) for t in order}
    for c in clients:
        for t in order:
            print(f"  {t.name} at {c} client(s)", file=sys.stderr, flush=True)
            results[t.name]["runs"][c] = _run(t, c, duration, use_wrk, drain=t.name == "genops")
    for t in order:
        results[t.name]["stream"] = _stream(t, duration)
        if t.process is not None:
            results[t.name]["rss_loaded_mb"] = sum(rss_mb(p) for p in t.proxy_pids())
            store = t.store_pid()
            if store:
                results[t.name]["store_rss_loaded_mb"] = rss_mb(store, tree=False)
    return {t.name: results[t.name] for t in targets}  # report order


def per_core(run: dict) -> float | None:
    """Requests per CPU-second of every process a proxy runs (GenOps: its worker(s) and its store)."""
    cpu_ms = run.get("cpu_ms_per_request")
    if not cpu_ms:
        return None
    return 1000.0 / (cpu_ms + (run.get("store_cpu_ms_per_request") or 0.0))


def per_core_lines(results: dict, clients: list[int]) -> list[str]:
    """Per core, counting all of GenOps's CPU (issue #22), and the stream's time to first byte at p99;
    each against the bare pass-through measured in the same run."""
    base = results.get("baseline")
    if base is None:
        return []
    lines = ["Per core (requests per CPU-second of all the proxy's processes, the store included) and stream TTFB",
             f"{'target':<16} {'clients':>7} {'req/CPU-s':>10} {'per-core/base':>13} {'ttfb p50':>9} {'ttfb p99':>9} "
             f"{'p99/base':>8}"]
    for name, res in results.items():
        if name == "direct":
            continue
        for c in clients:
            run, brun = res["runs"][c], base["runs"][c]
            mine, bare = per_core(run), per_core(brun)
            run["requests_per_cpu_second"] = mine
            ratio = mine / bare if mine and bare else None
            run["per_core_vs_base"] = ratio
            lines.append(f"{name:<16} {c:>7} {fmt(mine):>10} {fmt(ratio):>13}")
        ttfb, bttfb = res["stream"]["ttfb_us"], base["stream"]["ttfb_us"]
        ratio = ttfb["p99"] / bttfb["p99"] if bttfb.get("p99") else None
        res["stream"]["ttfb_p99_vs_base"] = ratio
        lines.append(f"{name:<16} {'stream':>7} {'':>10} {'':>13} {ttfb['p50'] / 1000:>8.2f}ms {ttfb['p99'] / 1000:>8.2f}ms "
                     f"{fmt(ratio):>8}")
    on, off = results.get("genops"), results.get(NO_EXPORT)
    if on and off:
        top = max(clients)
        cost = 1 - on["runs"][top]["rps"] / off["runs"][top]["rps"] if off["runs"][top]["rps"] else None
        on["telemetry_cost_of_throughput"] = cost
        lines.append(f"telemetry export costs {fmt(100 * cost if cost is not None else None, '%')} of the throughput "
                     f"at {top} clients (GenOps with export on vs off)")
    return lines


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"


def report(results: dict, clients: list[int]) -> str:
    lines = []
    direct = results["direct"]
    base = results.get("baseline")
    lines.append("Added latency vs direct (ms) and throughput; ratios are to the bare aiohttp pass-through")
    lines.append(f"{'target':<10} {'clients':>7} {'rps':>9} {'add p50':>8} {'add p90':>8} {'add p99':>8} "
                 f"{'cpu ms/req':>10} {'store cpu':>9} {'rps/base':>8} {'p50/base':>8}")
    for name, res in results.items():
        if name == "direct":
            continue
        for c in clients:
            run, d = res["runs"][c], direct["runs"][c]
            lat = run.get("python_client_latency_us") or run["latency_us"]
            dlat = d.get("python_client_latency_us") or d["latency_us"]
            added = {q: (lat[q] - dlat[q]) / 1000 for q in ("p50", "p90", "p99")}
            run["added_ms"] = added
            ratio_rps = ratio_p50 = None
            if base and name != "baseline":
                b = base["runs"][c]
                blat = b.get("python_client_latency_us") or b["latency_us"]
                ratio_rps = run["rps"] / b["rps"] if b["rps"] else None
                bare_added = {q: (blat[q] - dlat[q]) / 1000 for q in ("p50", "p99")}
                # added latency against the bare pass-through's (#22's floor), where the floor is above zero
                run["added_vs_base"] = {q: added[q] / b_ms if b_ms > 0 else None for q, b_ms in bare_added.items()}
                ratio_p50 = run["added_vs_base"]["p50"]
            lines.append(f"{name:<10} {c:>7} {run['rps']:>9,.0f} {added['p50']:>8.3f} {added['p90']:>8.3f} "
                         f"{added['p99']:>8.3f} {fmt(run.get('cpu_ms_per_request')):>10} "
                         f"{fmt(run.get('store_cpu_ms_per_request')):>9} {fmt(ratio_rps):>8} {fmt(ratio_p50):>8}")
    lines.append("")
    lines.extend(per_core_lines(results, clients))
    lines.append("")
    lines.append(f"{'target':<10} {'stream ttfb p50':>16} {'added ttfb p50':>15} {'full p50':>9} {'RSS idle':>9} "
                 f"{'RSS loaded':>10} {'store RSS idle/loaded':>22}")
    for name, res in results.items():
        s = res["stream"]
        added = (s["ttfb_us"]["p50"] - direct["stream"]["ttfb_us"]["p50"]) / 1000
        res["stream"]["added_ttfb_ms"] = added
        lines.append(f"{name:<10} {s['ttfb_us']['p50'] / 1000:>15.3f}ms {added:>14.3f}ms "
                     f"{s['full_us']['p50'] / 1000:>8.3f}ms {fmt(res.get('rss_idle_mb'), 'MB'):>9} "
                     f"{fmt(res.get('rss_loaded_mb'), 'MB'):>10} "
                     f"{fmt(res.get('store_rss_idle_mb'), 'MB'):>10}/{fmt(res.get('store_rss_loaded_mb'), 'MB'):<10}")
    lines.append("cpu ms/req and RSS are the process(es) serving the port; 'store' is genops's separate store "
                 "process (GENOPS_STORE_PROCESS), when there is one")
    return "\n".join(lines)


def median_tree(items: list) -> object:
    """The element-wise median of results of the same shape: numbers become their median across
    ``items``; anything else (or a value some items lack) is taken from the first."""
    first = items[0]
    if isinstance(first, dict):
        return {k: median_tree([i[k] for i in items]) for k in first if all(isinstance(i, dict) and k in i for i in items)}
    if all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        return statistics.median(items)
    return first


#: Issue #22's "done when" figures: (name, limit, whether the figure must stay at or below it).
CRITERIA: tuple[tuple[str, float, bool], ...] = (
    ("per core vs bare, {top} clients", 0.8, False),
    ("1-client added p50 vs bare's", 1.2, True),
    ("1-client added p99 vs bare's", 1.5, True),
    ("stream TTFB p99 vs bare's", 1.5, True),
    ("telemetry share of throughput", 0.10, True),
    ("1-client p99, export on vs off", 1.2, True),
    ("stream TTFB p99, export on vs off", 1.2, True),
)


def criteria(results: dict, clients: list[int]) -> dict[str, float | None]:
    """This run's #22 figures (after :func:`report` filled in the derived ones)."""
    on, off, base = results.get("genops"), results.get(NO_EXPORT), results.get("baseline")
    if not on or not base:
        return {}
    top = max(clients)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    out: dict[str, float | None] = {"per core vs bare, {top} clients": on["runs"][top].get("per_core_vs_base"),
                                    "stream TTFB p99 vs bare's": on["stream"].get("ttfb_p99_vs_base"),
                                    "telemetry share of throughput": on.get("telemetry_cost_of_throughput")}
    if 1 in clients:
        vs_bare = on["runs"][1]["added_vs_base"]
        out["1-client added p50 vs bare's"] = vs_bare["p50"]
        out["1-client added p99 vs bare's"] = vs_bare["p99"]
        if off:
            added, quiet = on["runs"][1]["added_ms"], off["runs"][1]["added_ms"]
            out["1-client p99, export on vs off"] = ratio(added["p99"], quiet["p99"]) if quiet["p99"] > 0 else None
    if off:
        out["stream TTFB p99, export on vs off"] = ratio(on["stream"]["ttfb_us"]["p99"], off["stream"]["ttfb_us"]["p99"])
    return out


def criteria_lines(runs: list[dict[str, float | None]], clients: list[int]) -> list[str]:
    """Each #22 figure: its median over the repetitions, every repetition's value, and whether the median meets it."""
    top = max(clients)
    lines = [f"Issue #22's targets: medians of {len(runs)} interleaved repetition(s)",
             f"{'figure':<36} {'median':>7} {'limit':>7} {'':>6}  repetitions"]
    for name, limit, at_most in CRITERIA:
        values = [r.get(name) for r in runs]
        known = [v for v in values if v is not None]
        if not known:
            continue
        mid = statistics.median(known)
        verdict = "meets" if (mid <= limit if at_most else mid >= limit) else "misses"
        shown = ", ".join("-" if v is None else f"{v:.2f}" for v in values)
        lines.append(f"{name.format(top=top):<36} {mid:>7.2f} {('<= ' if at_most else '>= ') + format(limit, 'g'):>7} "
                     f"{verdict:>6}  {shown}")
    return lines


def soak(target: Target, total: int, use_wrk: bool) -> str:
    """Drive ``total`` requests in slices; report RSS and p99 per slice to show they stay flat.

    RSS is read twice per slice: as the slice's last request is answered ("loaded": export
    buffers as full as the rate makes them, ~1 s of spans), and again after the export
    interval has passed with no traffic ("settled": what the process keeps; a leak shows here).
    With ``wrk``, slices are timed to hold ~``total / 10`` requests each (wrk runs for whole
    seconds) and the load generator's own CPU stays small: the Python client, at these rates,
    takes most of the core it shares with the store process, whose hand-offs then lag and
    leave the worker holding several seconds of spans.
    """
    slices = 10
    url = target.url + PATH
    seconds = 0
    if use_wrk:
        probe = wrk(url, BODY, 50, 2)  # the rate, to size the slices
        seconds = max(1, round(total / slices / max(probe["rps"], 1.0)))
    how = f"wrk, {seconds} s slices" if use_wrk else "bench/loadgen.py"
    lines = [f"soak: {total:,} requests in {slices} slices against {target.name} (50 clients, {how})"]
    proxies, store = target.proxy_pids(), target.store_pid()
    idle = sum(rss_mb(p) for p in proxies)
    lines.append(f"  idle: proxy RSS {idle:.1f} MB" + (f", store RSS {rss_mb(store, tree=False):.1f} MB" if store else ""))
    first: tuple[float, float] | None = None
    served = 0
    for i in range(slices):
        run = wrk(url, BODY, 50, seconds) if use_wrk else loadgen(url, BODY, 50, 3600, requests=total // slices)
        served += run["requests"]
        loaded = sum(rss_mb(p) for p in proxies)
        loaded_buffers = shmem_mb(proxies)
        time.sleep(SETTLE_S)
        settled = sum(rss_mb(p) for p in proxies)
        settled_buffers = shmem_mb(proxies)
        first = first or (loaded, settled)
        store_text = f"  store RSS {rss_mb(store, tree=False):.1f} MB" if store else ""
        lines.append(f"  slice {i + 1:>2}: {run['rps']:>7,.0f} rps  p99 {run['latency_us']['p99'] / 1000:.2f} ms  "
                     f"proxy RSS loaded {loaded:.1f} MB ({(loaded / first[0] - 1) * 100:+.1f}%; "
                     f"export buffers {loaded_buffers:.1f}), settled {settled:.1f} MB "
                     f"({(settled / first[1] - 1) * 100:+.1f}% vs slice 1; buffers {settled_buffers:.1f}){store_text}")
    lines.append(f"  served {served:,} requests")
    return "\n".join(lines)


#: Pause before the "settled" RSS reading: longer than the export interval (1 s by default).
SETTLE_S = 2.0


BODY_SIZES_MB = (1, 16, 64)


def canned_embeddings(size: int) -> bytes:
    """A valid embeddings answer of ``size`` bytes (one base64 embedding string, padded to size)."""
    head = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":"'
    tail = b'"}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
    return head + b"A" * max(0, size - len(head) - len(tail)) + tail


def serve_bodies(port: int) -> None:
    """The canned upstream of ``--bodies``: any request gets ``?bytes=N`` bytes of JSON."""
    from aiohttp import web

    answers: dict[int, bytes] = {}

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        size = int(request.query.get("bytes", "1024"))
        body = answers.get(size) or answers.setdefault(size, canned_embeddings(size))
        return web.Response(body=body, content_type="application/json")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def fetch_size(url: str) -> int:
    request = urllib.request.Request(url, data=b'{"model":"text-embedding-3-small","input":"hello"}',
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return len(response.read())


def bodies(args: argparse.Namespace) -> int:
    """MB/s through GenOps vs direct for 1, 16 and 64 MB non-streamed answers, and GenOps's CPU per call."""
    work = Path(tempfile.mkdtemp(prefix="genops-bench-"))
    ports = {name: free_port() for name in ("upstream", "genops")}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start([*pin(1), sys.executable, str(Path(__file__).resolve()), "--serve-bodies",
                            str(ports["upstream"])]))
        upstream_url = f"http://127.0.0.1:{ports['upstream']}"
        genops_env = serve_env(args, upstream_url, ports["genops"], work / "data")
        genops = start([sys.executable, "-m", "genops", "serve"], genops_env, work / "genops.log")
        procs.append(genops)
        wait_http(f"http://127.0.0.1:{ports['genops']}/healthz")
        wait_http(upstream_url + "/")
        client = genops_env.get("GENOPS_UPSTREAM_CLIENT", os.environ.get("GENOPS_UPSTREAM_CLIENT", "native"))
        print(f"non-streamed bodies, upstream client: {client}")
        print(f"{'size':>6} {'direct MB/s':>12} {'genops MB/s':>12} {'ratio':>6} {'genops CPU ms/call':>19}")
        sizes = (1,) if args.smoke else BODY_SIZES_MB
        for size_mb in sizes:
            size = size_mb << 20
            reps = 2 if args.smoke else max(3, 64 // size_mb)
            rates = {}
            cpu_ms = 0.0
            for name, base in (("direct", upstream_url), ("genops", f"http://127.0.0.1:{ports['genops']}")):
                url = f"{base}/v1/embeddings?bytes={size}"
                fetch_size(url)  # warm: connections, caches
                cpu_before = cpu_seconds(genops.pid)
                started = time.perf_counter()
                for _ in range(reps):
                    assert fetch_size(url) == size
                elapsed = time.perf_counter() - started
                rates[name] = size * reps / elapsed / 1e6
                if name == "genops":
                    cpu_ms = (cpu_seconds(genops.pid) - cpu_before) / reps * 1000
            print(f"{size_mb:>4}MB {rates['direct']:>12.0f} {rates['genops']:>12.0f} "
                  f"{rates['genops'] / rates['direct']:>6.2f} {cpu_ms:>19.1f}")
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure every target N times, interleaved, and report the medians (#22 asks for N >= 3)")
    parser.add_argument("--smoke", action="store_true", help="tiny run that only checks everything works")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="also run N requests and show RSS/p99 flatness")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even where wrk exists")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--genops-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for genops serve (e.g. GENOPS_SAFETY_POLICY=...)")
    parser.add_argument("--no-export-off", action="store_true",
                        help="skip the second GenOps with export off (GENOPS_EXPORT_ENABLED=false)")
    parser.add_argument("--bodies", action="store_true",
                        help="only measure MB/s of 1, 16 and 64 MB non-streamed answers (GenOps vs direct)")
    parser.add_argument("--serve-bodies", type=int, metavar="PORT", help=argparse.SUPPRESS)  # --bodies' upstream
    args = parser.parse_args(argv)
    if args.serve_bodies:
        serve_bodies(args.serve_bodies)
        return 0
    if args.bodies:
        return bodies(args)
    if args.smoke:
        args.duration, args.clients, args.no_wrk = 0.5, "1,4", True
    clients = [int(c) for c in args.clients.split(",")]
    use_wrk = bool(shutil.which("wrk")) and not args.no_wrk
    work = Path(tempfile.mkdtemp(prefix="genops-bench-"))
    ports = {name: free_port() for name in ("upstream", "baseline", "genops", "genops_noexport")}
    procs: list[subprocess.Popen] = []
    try:
        upstream = start([*pin(1), sys.executable, str(HERE / "upstream.py"), "--port", str(ports["upstream"])])
        procs.append(upstream)
        upstream_url = f"http://127.0.0.1:{ports['upstream']}"
        baseline = start([*pin(0), sys.executable, str(HERE / "baseline.py"), "--port", str(ports["baseline"]),
                          "--upstream", upstream_url])
        procs.append(baseline)
        genops_env = serve_env(args, upstream_url, ports["genops"], work / "data")
        genops = start([sys.executable, "-m", "genops", "serve"], genops_env, work / "genops.log")
        procs.append(genops)
        quiet = None
        if not args.no_export_off:  # the same proxy with telemetry export off: what export costs, in the same run
            quiet_env = {**genops_env, "GENOPS_PORT": str(ports["genops_noexport"]), "GENOPS_EXPORT_ENABLED": "false",
                         "GENOPS_DATA_DIR": str(work / "data-noexport"), "GENOPS_OTLP_PORT": str(free_port())}
            quiet = start([sys.executable, "-m", "genops", "serve"], quiet_env, work / "genops-noexport.log")
            procs.append(quiet)
            wait_http(f"http://127.0.0.1:{ports['genops_noexport']}/healthz")
        wait_http(f"http://127.0.0.1:{ports['genops']}/healthz")
        wait_http(f"http://127.0.0.1:{ports['baseline']}/")
        time.sleep(0.3)
        targets = [Target("direct", upstream_url, None),
                   Target("baseline", f"http://127.0.0.1:{ports['baseline']}", baseline),
                   Target("genops", f"http://127.0.0.1:{ports['genops']}", genops)]
        if quiet is not None:
            targets.append(Target(NO_EXPORT, f"http://127.0.0.1:{ports['genops_noexport']}", quiet))
            pin_genops(targets[3])
        genops_pinning = pin_genops(targets[2])
        print(f"pinning: baseline on core 0, {genops_pinning}, upstream and load generator on core 1"
              if pin(0) else "pinning: none", file=sys.stderr)
        print(f"load generator: {'wrk (throughput at >=10 clients) + ' if use_wrk else ''}bench/loadgen.py (uvloop)",
              file=sys.stderr)
        repetitions, figures = [], []
        for rep in range(max(1, args.repeat)):
            print(f"repetition {rep + 1}/{max(1, args.repeat)} ...", file=sys.stderr, flush=True)
            results = measure(targets, clients, args.duration, use_wrk, rep)
            if args.repeat > 1:
                print(f"--- repetition {rep + 1} of {args.repeat}")
            print(report(results, clients))
            repetitions.append(results)
            figures.append(criteria(results, clients))
        print()
        print("\n".join(criteria_lines(figures, clients)))
        results = repetitions[0] if len(repetitions) == 1 else median_tree(repetitions)  # type: ignore[assignment]
        if len(repetitions) > 1:
            results["repetitions"] = repetitions
        results["criteria"] = figures
        if args.soak:
            print(soak(targets[2], args.soak, use_wrk))
        genops.send_signal(signal.SIGTERM)  # flushes every pending span; then read the store directly
        genops.wait(60)
        stored = subprocess.run(
            [sys.executable, "-m", "genops", "sql", "-f", "json", "SELECT count() AS spans FROM otel_traces"],
            env={**os.environ, **genops_env}, capture_output=True, text=True, timeout=120)
        print(f"spans stored by genops during the run: {stored.stdout.strip() or stored.stderr.strip()}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
