"""What a kill, a stop and a rolling restart cost at 200 calls/s through `genops serve` (docs/operations.md).

    python bench/durability.py                    # every scenario, 6 s of load before each event
    python bench/durability.py --only sigkill     # one kind: sigkill, worker-kill, sigterm, sighup
    python bench/durability.py --smoke            # seconds; checks it runs

The fake upstream and `genops serve` (embedded store) run as processes of their own; the load
(bench/drain_load.py: open loop, kept-alive connections, one call in ten a stream of ~2 s)
comes from this process. Scenarios, each on a fresh data directory:

- **SIGKILL** of the whole process tree (supervisor and workers: a node or container dying),
  the store in the proxy's process (``inline``) and in its own (``separate``, the default on
  2+ cores), ``GENOPS_SPOOL_FSYNC`` off and on. Then a restart on the same data directory:
  time until ``/readyz`` answers 200, spool replayed, and how many answered calls have no span
  (lost; also as seconds of traffic at the rate) or two (duplicates).
- **worker SIGKILL** (separate store): the supervisor restarts it; calls refused or reset
  meanwhile, spans lost.
- **SIGTERM** (inline, separate, ``--workers 2``): drain time (signal to exit), calls reset
  (accepted, not completed), spans lost (read from the store after the exit).
- **SIGHUP** rolling restart (``--workers 1`` and ``2``, separate store): calls failed, time
  the restart took, spans lost (after a SIGTERM that ends the run).

Progress goes to stderr, the table to stdout; ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, metric, wait_http
from drain_load import DrainLoad

KINDS = ("sigkill", "worker-kill", "sigterm", "sighup")


def progress(message: str) -> None:
    print(f"[durability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """A `genops serve` process tree in a session of its own (so the whole tree can be killed at once)."""

    def __init__(self, data_dir: Path, upstream: str, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
        self.env.update({"GENOPS_PORT": str(self.port), "GENOPS_DATA_DIR": str(data_dir), "GENOPS_OTLP_PORT": "0",
                         "GENOPS_OPENAI_BASE_URL": upstream, "GENOPS_LOG_LEVEL": "info", **env})
        self.args = args
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> float:
        """Start it; returns the seconds until ``/readyz`` answered 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # closed with the process
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "genops", "serve", *self.args], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=str(self.data_dir.parent),
                                        start_new_session=True)
        wait_http(self.url + "/readyz", self.process, timeout=120)
        return time.monotonic() - self.started

    def kill_tree(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def workers(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        found: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        return sorted(found)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> float:
        """Signal it and wait for the exit; returns the seconds it took."""
        assert self.process is not None
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        return time.monotonic() - began

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sql(self, query: str) -> list[dict]:
        token = (self.data_dir / "admin_token").read_text().strip()
        request = urllib.request.Request(self.url + "/genops/v1/sql", data=json.dumps({"query": query}).encode(),
                                         headers={"Authorization": f"Bearer {token}"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            data = json.loads(response.read())
        return [dict(zip(data["columns"], row, strict=True)) for row in data["rows"]]

    def wait_drained(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if metric(self.url, "genops_spool_spans") == 0 and metric(self.url, "genops_export_queue_spans") == 0:
                return
            time.sleep(0.2)
        progress("the spool did not drain in time")


def stored_after_exit(data_dir: Path, prefix: str) -> dict[str, int]:
    """Spans per request id in the store of a stopped server (``genops sql`` opens it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(data_dir)
    done = subprocess.run([sys.executable, "-m", "genops", "sql", "-f", "json",
                           "SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
                           f"WHERE startsWith(id, '{prefix}') GROUP BY id"],
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return {row["id"]: int(row["n"]) for row in json.loads(done.stdout or "[]")}


def stored_live(server: Server, prefix: str) -> dict[str, int]:
    rows = server.sql("SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
                      f"WHERE startsWith(id, '{prefix}') GROUP BY id")
    return {row["id"]: int(row["n"]) for row in rows}


def tally(load: DrainLoad, stored: dict[str, int], rate: float) -> dict:
    counts = load.counts()
    ok = load.ok_ids()
    lost = ok - set(stored)
    return {"calls_ok": counts.get("ok", 0), "calls_refused": counts.get("refused", 0),
            "calls_reset": sum(n for k, n in counts.items() if k not in ("ok", "refused")),
            "stale_keepalive_retries": load.stale_retries, "spans_lost": len(lost),
            "spans_lost_s": round(len(lost) / rate, 2), "duplicates": sum(1 for n in stored.values() if n > 1)}


def store_mode(mode: str) -> tuple[dict[str, str], tuple[str, ...]]:
    if mode == "workers2":
        return {"GENOPS_STORE_PROCESS": "separate"}, ("--workers", "2")
    return {"GENOPS_STORE_PROCESS": mode}, ()


def sigkill(root: Path, upstream: str, mode: str, fsync: bool, rate: float, seconds: float) -> dict:
    env, args = store_mode(mode)
    env["GENOPS_SPOOL_FSYNC"] = "true" if fsync else "false"
    server = Server(root / f"kill-{mode}-{'fsync' if fsync else 'nofsync'}", upstream, env, args)
    server.start()
    load = DrainLoad("127.0.0.1", server.port, rate=rate).start()
    time.sleep(seconds)
    progress(f"SIGKILL of the whole tree ({mode}, fsync {'on' if fsync else 'off'})")
    server.kill_tree()
    time.sleep(0.5)
    load.stop()
    ready_s = server.start()
    progress(f"restarted: ready in {ready_s:.1f} s; waiting for the spool replay")
    server.wait_drained()
    result = {"event": "SIGKILL (tree)", "mode": mode, "fsync": fsync, "ready_after_restart_s": round(ready_s, 2),
              **tally(load, stored_live(server, load.prefix), rate)}
    server.stop()
    return result


def worker_kill(root: Path, upstream: str, mode: str, rate: float, seconds: float) -> dict:
    env, args = store_mode(mode)
    server = Server(root / f"workerkill-{mode}", upstream, env, args)
    server.start()
    load = DrainLoad("127.0.0.1", server.port, rate=rate).start()
    time.sleep(seconds)
    victim = server.workers()[0]
    listening = server.logs().count('"msg":"worker listening"')
    progress(f"SIGKILL of worker {victim} ({mode})")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    back = None
    while time.monotonic() - killed < 60:
        if server.logs().count('"msg":"worker listening"') > listening:  # its replacement listens
            back = time.monotonic() - killed
            break
        time.sleep(0.05)
    time.sleep(3.0)  # the restarted worker listens, replays its spool
    load.stop()
    server.wait_drained()
    result = {"event": "SIGKILL (one worker)", "mode": mode, "worker_back_s": round(back or -1, 2),
              **tally(load, stored_live(server, load.prefix), rate)}
    server.stop()
    return result


def sigterm(root: Path, upstream: str, mode: str, rate: float, seconds: float) -> dict:
    env, args = store_mode(mode)
    server = Server(root / f"term-{mode}", upstream, env, args)
    server.start()
    load = DrainLoad("127.0.0.1", server.port, rate=rate).start()
    time.sleep(seconds)
    progress(f"SIGTERM ({mode})")
    drain_s = server.stop(signal.SIGTERM)
    time.sleep(0.5)
    load.stop()
    stored = stored_after_exit(server.data_dir, load.prefix)
    return {"event": "SIGTERM", "mode": mode, "drain_s": round(drain_s, 2), "exit_code": server.process.returncode,
            **tally(load, stored, rate)}


def sighup(root: Path, upstream: str, workers: int, rate: float, seconds: float) -> dict:
    server = Server(root / f"hup-{workers}", upstream, {"GENOPS_STORE_PROCESS": "separate"},
                    ("--workers", str(workers)))
    server.start()
    before = server.workers()
    load = DrainLoad("127.0.0.1", server.port, rate=rate).start()
    time.sleep(seconds)
    progress(f"SIGHUP: rolling restart of {workers} worker(s)")
    began = time.monotonic()
    server.process.send_signal(signal.SIGHUP)
    while "rolling restart done" not in server.logs() and time.monotonic() - began < 180:
        time.sleep(0.05)
    restart_s = time.monotonic() - began
    time.sleep(1.0)
    load.stop()
    after = server.workers()
    server.stop(signal.SIGTERM)
    stored = stored_after_exit(server.data_dir, load.prefix)
    return {"event": "SIGHUP (rolling restart)", "mode": f"workers{workers}", "restart_s": round(restart_s, 2),
            "workers_replaced": len(set(before) - set(after)), **tally(load, stored, rate)}


def table(results: list[dict]) -> str:
    columns = ["event", "mode", "fsync", "calls_ok", "calls_refused", "calls_reset", "spans_lost", "spans_lost_s",
               "duplicates", "ready_after_restart_s", "worker_back_s", "drain_s", "restart_s",
               "stale_keepalive_retries"]
    used = [c for c in columns if any(c in r for r in results)]
    lines = ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
    for r in results:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in used) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second (open loop)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load before each event")
    parser.add_argument("--only", default=",".join(KINDS), help=f"comma-separated subset of {', '.join(KINDS)}")
    parser.add_argument("--smoke", action="store_true", help="one short run of each kind (checks the script runs)")
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown --only {sorted(unknown)}")
    seconds = 1.5 if args.smoke else args.seconds

    with tempfile.TemporaryDirectory(prefix="genops-durability-") as tmp:
        root = Path(tmp)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "genops", "fake-upstream", "--port", str(upstream_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        results: list[dict] = []
        try:
            wait_http(upstream_url + "/_fake/requests", upstream)
            if "sigkill" in kinds:
                for fsync in ((False,) if args.smoke else (False, True)):
                    for mode in (("separate",) if args.smoke else ("inline", "separate")):
                        results.append(sigkill(root, upstream_url, mode, fsync, args.rate, seconds))
                        progress(json.dumps(results[-1]))
            if "worker-kill" in kinds:
                for mode in (("separate",) if args.smoke else ("separate", "workers2")):
                    results.append(worker_kill(root, upstream_url, mode, args.rate, seconds))
                    progress(json.dumps(results[-1]))
            if "sigterm" in kinds:
                for mode in (("inline",) if args.smoke else ("inline", "separate", "workers2")):
                    results.append(sigterm(root, upstream_url, mode, args.rate, seconds))
                    progress(json.dumps(results[-1]))
            if "sighup" in kinds:
                for workers in ((1,) if args.smoke else (1, 2)):
                    results.append(sighup(root, upstream_url, workers, args.rate, seconds))
                    progress(json.dumps(results[-1]))
        finally:
            upstream.terminate()
            upstream.wait(10)
    print(f"{args.rate:g} calls/s, {seconds:g} s of load before each event, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
