"""How `genops serve --workers N` scales: throughput and CPU per call for N = 1 .. cores.

    python bench/workers_scaling.py               # N = 1 .. number of cores, 8 s each
    python bench/workers_scaling.py --workers 1,2,4 --duration 10
    python bench/workers_scaling.py --smoke        # seconds; checks it runs

For each N it starts the fake upstream and `genops serve --workers N` (every default on),
pins worker i to core i mod cores, drives the port with `wrk` at ``--clients`` connections
(or the uvloop client where `wrk` is missing) and reports requests/s, each worker's CPU per
call and the store process's.

``--worker-cpu F`` gives each worker a CPU quota of F of a core (its own cgroup; root, Linux
cgroup v1 or v2), i.e. emulates N cores of size F: on a small machine, N workers' quotas then
fit next to the load generator, the fake upstream and the store, and requests/s should grow
N-fold if nothing is shared between workers (the kernel's port sharing, the store).

Without it, on a machine with fewer free cores than workers, requests/s alone says little: the
load generator, the fake upstream and the store share the cores. What shows whether workers
scale is *requests/s per worker CPU-second* (the inverse of a worker's CPU per call): if it
stays flat as N grows, workers do not slow each other down, and each core given to a worker
adds a worker's worth of throughput. The shared store process sets the ceiling: it needs
``store ms/call`` of one core per call, so it can follow at most ``1000 / store ms`` calls/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SMOKE_ENV, wait_stored
from proxy_bench import BODY, HERE, PATH, cpu_seconds, free_port, loadgen, start, tree_pids, wait_http, wrk


class CpuQuota:
    """A cgroup per worker with a CPU quota of ``fraction`` of a core (cgroup v2, else v1's cpu controller)."""

    PERIOD_US = 100_000

    def __init__(self, fraction: float) -> None:
        self.quota_us = max(1000, int(fraction * self.PERIOD_US))
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        self.root = Path("/sys/fs/cgroup") if v2.exists() else Path("/sys/fs/cgroup/cpu")
        self.v2 = v2.exists()
        self.groups: list[Path] = []
        if not os.access(self.root, os.W_OK):
            raise SystemExit(f"--worker-cpu needs write access to {self.root} (root, Linux cgroups)")

    def limit(self, pid: int) -> None:
        """Move ``pid`` (every thread) into a new group with the quota."""
        group = self.root / f"genops-bench-{pid}"
        group.mkdir(exist_ok=True)
        self.groups.append(group)
        if self.v2:
            (group / "cpu.max").write_text(f"{self.quota_us} {self.PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        (group / "cgroup.procs").write_text(str(pid))  # every thread, and threads started later

    def throttled_s(self) -> float:
        """Seconds the quota held workers back so far (all groups)."""
        total = 0.0
        for group in self.groups:
            for line in (group / "cpu.stat").read_text().splitlines():
                key, value = line.split()
                if key == "throttled_usec":
                    total += int(value) / 1e6
                elif key == "throttled_time":  # v1: nanoseconds
                    total += int(value) / 1e9
        return total

    def release(self) -> None:
        for group in self.groups:
            try:
                group.rmdir()  # empty once its process has exited
            except OSError:
                pass
        self.groups.clear()


def run_one(workers: int, clients: int, duration: float, use_wrk: bool, work: Path, upstream_url: str,
            worker_cpu: float = 0.0, extra_env: dict[str, str] | None = None) -> dict:
    """One `genops serve --workers N` measured at ``clients`` connections (each worker held to
    ``worker_cpu`` of a core when given; ``extra_env``: more settings for it)."""
    port = free_port()
    env = {"GENOPS_OPENAI_BASE_URL": upstream_url, "GENOPS_PORT": str(port), "GENOPS_WORKERS": str(workers),
           "GENOPS_DATA_DIR": str(work / f"data-{workers}"), "GENOPS_LOG_LEVEL": "warning", "GENOPS_OTLP_PORT": "0",
           **(extra_env or {})}
    genops = start([sys.executable, "-m", "genops", "serve"], env, work / f"genops-{workers}.log")
    quota = CpuQuota(worker_cpu) if worker_cpu else None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        deadline = time.monotonic() + 60
        pids: list[int] = []
        while time.monotonic() < deadline:  # the workers are the supervisor's children
            pids = [p for p in tree_pids(genops.pid) if p != genops.pid]
            if len(pids) >= workers:
                break
            time.sleep(0.1)
        cores = os.cpu_count() or 1
        if shutil.which("taskset") and cores >= 2:
            for i, pid in enumerate(sorted(pids)):
                subprocess.run(["taskset", "-apc", str(i % cores), str(pid)], capture_output=True, check=False)
        if quota is not None:
            for pid in pids:
                quota.limit(pid)
        loadgen(url + PATH, BODY, clients, min(duration, 2.0))  # warm up every worker's connections
        wait_stored(url + "/metrics")  # the warm-up's spans inserted before the run's CPU is counted
        cpu0 = {p: cpu_seconds(p, tree=False) for p in pids}
        store0 = cpu_seconds(genops.pid, tree=False)
        throttled0 = quota.throttled_s() if quota is not None else 0.0
        run = wrk(url + PATH, BODY, clients, duration) if use_wrk else loadgen(url + PATH, BODY, clients, duration)
        used = sum(cpu_seconds(p, tree=False) - cpu0[p] for p in pids)
        wait_stored(url + "/metrics")  # the store inserts the run's last spans after it (its insert interval)
        store_cpu = cpu_seconds(genops.pid, tree=False) - store0
        throttled = (quota.throttled_s() - throttled0) if quota is not None else None
        requests = max(1, run["requests"])
        return {
            "workers": workers, "clients": clients, "rps": run["rps"], "errors": run["errors"],
            "p50_ms": (run["latency_us"]["p50"] or 0) / 1000, "p99_ms": (run["latency_us"]["p99"] or 0) / 1000,
            "worker_cpu_ms_per_call": used * 1000 / requests,
            "store_cpu_ms_per_call": store_cpu * 1000 / requests,
            "rps_per_worker_cpu_second": requests / used if used else None,
            "worker_cores_busy": used / run.get("seconds", duration),
            "worker_cpu_quota": worker_cpu or None, "throttled_s": throttled,
        }
    finally:
        genops.send_signal(signal.SIGTERM)
        try:
            genops.wait(60)
        except subprocess.TimeoutExpired:
            genops.kill()
        if quota is not None:
            quota.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="", help="comma-separated worker counts (default 1 .. cores)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--worker-cpu", type=float, default=0.0, metavar="F",
                        help="hold each worker to F of a core (cgroup quota; needs root): N workers = N cores of size F")
    parser.add_argument("--smoke", action="store_true", help="a short run that only checks everything works")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    counts = [int(n) for n in args.workers.split(",")] if args.workers else list(range(1, cores + 1))
    if args.smoke:
        counts, args.clients, args.duration = [1, 2], 4, 1.0
    use_wrk = bool(shutil.which("wrk")) and not args.smoke
    work = Path(tempfile.mkdtemp(prefix="genops-workers-"))
    upstream_port = free_port()
    upstream = start([sys.executable, str(HERE / "upstream.py"), "--port", str(upstream_port)])
    results = []
    try:
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        wait_http(upstream_url + "/")
        print(f"{cores} cores; workers pinned one per core (i mod {cores})"
              + (f", each held to {args.worker_cpu:g} of a core" if args.worker_cpu else "")
              + f"; store, upstream and {'wrk' if use_wrk else 'bench/loadgen.py'} unpinned; "
              f"{args.clients} clients, {args.duration:g} s each", file=sys.stderr)
        for n in counts:
            print(f"measuring --workers {n} ...", file=sys.stderr, flush=True)
            results.append(run_one(n, args.clients, args.duration, use_wrk, work, upstream_url, args.worker_cpu,
                                   SMOKE_ENV if args.smoke else None))
        first = results[0]
        print(f"{'workers':>7} {'rps':>8} {'rps/N=1':>8} {'p50 ms':>7} {'p99 ms':>7} {'worker ms/call':>14} "
              f"{'rps per worker CPU-s':>20} {'vs N=1':>6} {'worker cores busy':>17} {'store ms/call':>13}")
        for r in results:
            per_cpu = r["rps_per_worker_cpu_second"] or 0
            print(f"{r['workers']:>7} {r['rps']:>8,.0f} {r['rps'] / first['rps']:>8.2f} {r['p50_ms']:>7.2f} "
                  f"{r['p99_ms']:>7.2f} {r['worker_cpu_ms_per_call']:>14.3f} {per_cpu:>20,.0f} "
                  f"{per_cpu / (first['rps_per_worker_cpu_second'] or 1):>6.2f} {r['worker_cores_busy']:>17.2f} "
                  f"{r['store_cpu_ms_per_call']:>13.3f}"
                  + (f"  throttled {r['throttled_s']:.1f} s" if r["throttled_s"] is not None else ""))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if all(r["errors"] == 0 for r in results) else 1
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
