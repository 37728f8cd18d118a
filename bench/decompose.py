"""Where a call's CPU goes: GenOps with its work switched off piece by piece, beside the bare
pass-through and GenOps's own exchange floor, in one run.

Targets, each alone on core 0 (every GenOps process, the store included), the fake upstream
and the load generator on core 1, as in ``bench/proxy_bench.py``:

- ``bare``: the bare aiohttp pass-through (``bench/baseline.py``), #22's reference;
- ``floor``: GenOps's HTTP server and upstream client with nothing between (``bench/floor_proxy.py``);
- ``genops``: ``genops serve``, every default;
- ``genops-no-record``: the same with the record stage skipped (``bench/no_record/``): no span
  ends, so no safety scan after the answer, attributes, cost, metrics or export;
- ``genops-no-export``: ``GENOPS_EXPORT_ENABLED=false``: everything but storing the spans.

Reported: CPU per call (user + system) of the proxy process and of the store process at
``--clients`` connections, medians of ``--rounds`` rounds in which the targets take turns; then the
differences: GenOps's request path (no-record - floor), its recording (no-export - no-record),
export in the worker (genops - no-export) and the store.

    python bench/decompose.py                  # 3 rounds of 10 s per target (~4 min)
    python bench/decompose.py --smoke          # seconds; checks it runs
    python bench/decompose.py --genops-env GENOPS_CAPTURE=none   # every genops measured with a setting
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import metric, wait_stored  # bench/'s own helpers, next to this script
from proxy_bench import (
    BODY,
    HERE,
    PATH,
    Target,
    cpu_seconds,
    free_port,
    loadgen,
    pin,
    pin_genops,
    serve_env,
    start,
    wait_http,
    wrk,
)

#: genops variants: name -> environment on top of the defaults.
VARIANTS = {
    "genops": {},
    "genops-no-record": {"GENOPS_BENCH_NO_RECORD": "1", "PYTHONPATH": str(HERE / "no_record")},
    "genops-no-export": {"GENOPS_EXPORT_ENABLED": "false"},
}


def measure(target: Target, clients: int, duration: float, use_wrk: bool) -> dict[str, float]:
    """One run: requests/s and CPU µs per call of the proxy process(es) and the store process."""
    proxies = target.proxy_pids()  # [] for a target it did not start
    store = target.store_pid()
    before = [cpu_seconds(p, tree=False) for p in proxies], cpu_seconds(store, tree=False) if store else 0.0
    run = (wrk if use_wrk else loadgen)(target.url + PATH, BODY, clients, duration)
    if store:  # a genops serve (export off: nothing to wait for, it returns at once)
        wait_stored(target.url + "/metrics")  # the store's CPU for these calls is spent by then
    after = [cpu_seconds(p, tree=False) for p in proxies], cpu_seconds(store, tree=False) if store else 0.0
    calls = max(1, run["requests"])
    return {"rps": run["requests"] / duration,
            "proxy_us": 1e6 * sum(a - b for a, b in zip(after[0], before[0], strict=True)) / calls,
            "store_us": 1e6 * (after[1] - before[1]) / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target and round")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="one short round, for the test suite")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--genops-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every genops serve measured (repeatable), as in proxy_bench.py")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.clients = 1, 1.0, 4
    use_wrk = shutil.which("wrk") is not None and not args.smoke
    work = Path(tempfile.mkdtemp(prefix="genops-decompose-"))
    procs = []
    try:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        procs.append(start([*pin(1), sys.executable, str(HERE / "upstream.py"), "--port", str(upstream_port)]))
        targets: list[Target] = []
        for name, script in (("bare", "baseline.py"), ("floor", "floor_proxy.py")):
            port = free_port()
            process = start([*pin(0), sys.executable, str(HERE / script), "--port", str(port), "--upstream", upstream])
            procs.append(process)
            targets.append(Target(name, f"http://127.0.0.1:{port}", process))
        for name, extra in VARIANTS.items():
            port = free_port()
            env = {**serve_env(args, upstream, port, work / name), "GENOPS_OTLP_PORT": str(free_port()), **extra}
            process = start([sys.executable, "-m", "genops", "serve"], env, work / f"{name}.log")
            procs.append(process)
            wait_http(f"http://127.0.0.1:{port}/healthz")
            target = Target(name, f"http://127.0.0.1:{port}", process)
            pin_genops(target)
            targets.append(target)
        for target in targets:
            wait_http(target.url + "/")
            loadgen(target.url + PATH, BODY, 4, 1.0)  # connections and caches warm
        print(f"{args.rounds} round(s) of {args.duration:g} s per target at {args.clients} clients "
              f"({'wrk' if use_wrk else 'bench/loadgen.py'}); CPU per call, user + system", file=sys.stderr)
        runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
        for r in range(args.rounds):
            for target in targets:
                runs[target.name].append(measure(target, args.clients, args.duration, use_wrk))
                print(f"round {r + 1} {target.name}: {json.dumps(runs[target.name][-1])}", file=sys.stderr, flush=True)
        medians = {name: {key: statistics.median(run[key] for run in rs) for key in rs[0]} for name, rs in runs.items()}
        # What each GenOps recorded over all its runs (the no-record one: nothing, or it measured the wrong thing).
        recorded = {t.name: metric(t.url, "genops_requests_total") for t in targets if t.name in VARIANTS}
        print(f"{'target':18} {'req/s':>8} {'proxy µs':>9} {'store µs':>9} {'all µs':>7}")
        for name, m in medians.items():
            print(f"{name:18} {m['rps']:8.0f} {m['proxy_us']:9.0f} {m['store_us']:9.0f} {m['proxy_us'] + m['store_us']:7.0f}")
        shares = {
            "exchange floor (floor)": medians["floor"]["proxy_us"],
            "request path (no-record - floor)": medians["genops-no-record"]["proxy_us"] - medians["floor"]["proxy_us"],
            "recording (no-export - no-record)": medians["genops-no-export"]["proxy_us"]
            - medians["genops-no-record"]["proxy_us"],
            "export in the worker (genops - no-export)": medians["genops"]["proxy_us"]
            - medians["genops-no-export"]["proxy_us"],
            "store (genops's store process)": medians["genops"]["store_us"],
        }
        print("\nGenOps's CPU per call, by piece (medians; differences of separate runs carry their noise)")
        for what, us in shares.items():
            print(f"  {what:44} {us:6.0f} µs")
        print(f"  {'bare pass-through, for reference':44} {medians['bare']['proxy_us']:6.0f} µs")
        print("calls recorded (genops_requests_total): " + ", ".join(f"{k} {v:.0f}" for k, v in recorded.items()))
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "medians": medians, "pieces_us": shares,
                                             "calls_recorded": recorded}, indent=2))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
