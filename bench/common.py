"""Helpers shared by the benchmarks: processes, ports, /proc CPU time, Prometheus metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: ``genops serve`` settings for a bench's ``--smoke`` run, which checks that the bench works, not its
#: figures: the store inserts every batch as it comes, so :func:`wait_stored` does not wait out
#: the default 5 s insert interval after each load (measured runs keep every default).
SMOKE_ENV = {"GENOPS_EXPORT_INTERVAL_MS": "100", "GENOPS_EXPORT_INSERT_INTERVAL_MS": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``python -m genops ARGS`` with ``env`` added to a clean GENOPS_-free environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    full_env.update(env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # closed with the process
    return subprocess.Popen([sys.executable, "-m", "genops", *args], env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(log_path.parent))


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(url: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} not up within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's live threads, summed by thread name (``comm``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def metric(base_url: str, name: str) -> float:
    """One unlabelled sample (or the sum of a family's samples) from ``/metrics``."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metric(text: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels, as exposed) in a Prometheus text page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_stored(metrics_url: str, timeout: float = 60.0) -> float:
    """Wait until GenOps's store has inserted every span its proxy made (its ``/metrics``); seconds waited.

    A run's CPU is read after this, so the store's work for the run's calls is counted even when
    it runs after the load ends (the proxy hands a batch on every export interval, and the store inserts every
    GENOPS_EXPORT_INSERT_INTERVAL_MS).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.1)
            continue
        made = _metric(text, 'genops_spans_received_total{source="proxy"}')
        stored = _metric(text, "genops_spans_exported_total")
        if made is not None and stored is not None and stored >= made:
            break
        time.sleep(0.1)
    return time.monotonic() - started
