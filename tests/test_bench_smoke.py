"""The proxy benchmark runs end to end (smoke mode). Timings are reported by bench/, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def run_smoke(script: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, object]:
    """Run ``bench/<script> --smoke``; its result and the figures it wrote as JSON."""
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--json", str(out), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())


def test_proxy_bench_smoke(tmp_path):
    result, figures = run_smoke("proxy_bench.py", tmp_path)
    assert set(figures) == {"direct", "baseline", "genops", "genops-noexport", "criteria"}
    for name in ("baseline", "genops", "genops-noexport"):
        for run in figures[name]["runs"].values():
            assert run["requests"] > 0 and run["errors"] == 0
        assert figures[name]["stream"]["requests"] > 0
    assert "Added latency vs direct" in result.stdout
    # per core, all of GenOps's CPU counted (the store too), and export on against off in the same run
    assert "Per core (requests per CPU-second" in result.stdout
    assert all(r["requests_per_cpu_second"] > 0 for r in figures["genops"]["runs"].values())
    assert figures["genops"]["stream"]["ttfb_p99_vs_base"] > 0
    assert "telemetry_cost_of_throughput" in figures["genops"]
    # #22's targets, each with a verdict; the CPU of a run is read once the store has stored its spans
    assert "Issue #22's targets" in result.stdout and "per core vs bare" in result.stdout
    assert figures["criteria"][0]["per core vs bare, {top} clients"] > 0
    assert all(r["store_drain_s"] >= 0 for r in figures["genops"]["runs"].values())
    # Every request GenOps served became a stored span.
    served = sum(r["requests"] for r in figures["genops"]["runs"].values()) + figures["genops"]["stream"]["requests"]
    stored = json.loads(result.stdout[result.stdout.index("[", result.stdout.index("spans stored")):])[0]["spans"]
    assert stored >= served


def test_proxy_bench_bodies_smoke():
    """`bench/proxy_bench.py --bodies` serves a non-streamed body through GenOps and reports its MB/s."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "proxy_bench.py"), "--bodies", "--smoke"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "genops MB/s" in result.stdout and "1MB" in result.stdout


def test_workers_scaling_bench_smoke(tmp_path):
    """`bench/workers_scaling.py` serves through one and two workers and reports each (no timing asserted)."""
    result, figures = run_smoke("workers_scaling.py", tmp_path)
    assert [r["workers"] for r in figures] == [1, 2]
    for run in figures:
        assert run["rps"] > 0 and run["errors"] == 0
        assert run["worker_cpu_ms_per_call"] > 0 and run["store_cpu_ms_per_call"] > 0
    assert "rps per worker CPU-s" in result.stdout


def test_store_insert_cost_bench_smoke():
    """`bench/store_insert_cost.py` inserts the proxy's spans into a real chDB with and without the views,
    and parses them in each format (no timing asserted)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "store_insert_cost.py"), "--smoke"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "compact_rows" in result.stdout
    for line in ("all (as migrated)", "none", "all but genops_calls and its two rollups", "JSONCompactEachRow", "Native",
                 "spell only (into a Null otel_traces)", "+ write, + every view (as migrated)"):
        assert line in result.stdout


def test_store_cadence_bench_smoke():
    """`bench/store_cadence.py` hands a real store pipeline steady batches and inserts them, each on its
    own and grouped (no timing asserted)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "store_cadence.py"), "--smoke",
                             "--spelling", "python,sql"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [parts for parts in map(str.split, result.stdout.splitlines()) if len(parts) == 6 and parts[1] == "s"]
    assert [row[:3] for row in rows] == [["0", "s", "Python"], ["5", "s", "Python"],
                                         ["0", "s", "ClickHouse"], ["5", "s", "ClickHouse"]], result.stdout
    assert all(int(row[3]) >= 1 and float(row[4]) > 0 for row in rows), result.stdout
    assert int(rows[1][3]) < int(rows[0][3]) and int(rows[3][3]) < int(rows[2][3]), "grouped: fewer inserts"


def _cgroup_writable() -> bool:
    import os

    root = Path("/sys/fs/cgroup") if Path("/sys/fs/cgroup/cgroup.controllers").exists() else Path("/sys/fs/cgroup/cpu")
    return root.is_dir() and os.access(root, os.W_OK)


@pytest.mark.skipif(not _cgroup_writable(), reason="--worker-cpu needs a writable cgroup tree (root)")
def test_workers_scaling_holds_each_worker_to_its_cpu_quota(tmp_path):
    """With ``--worker-cpu`` each worker runs in its own cgroup with a CPU quota, and the quota bites."""
    result, figures = run_smoke("workers_scaling.py", tmp_path, "--worker-cpu", "0.1")
    for run in figures:
        assert run["worker_cpu_quota"] == 0.1 and run["rps"] > 0 and run["errors"] == 0
        # Held to a tenth of a core each: the workers were throttled and used little more than their quota.
        assert run["throttled_s"] > 0 and run["worker_cores_busy"] < run["workers"] * 0.1 * 1.5
    assert "held to 0.1 of a core" in result.stderr


def test_decompose_bench_smoke(tmp_path):
    """`bench/decompose.py` measures the bare pass-through, GenOps's exchange floor and GenOps with its
    recording and its export switched off, in one run (no timing asserted)."""
    result, figures = run_smoke("decompose.py", tmp_path)
    assert set(figures["medians"]) == {"bare", "floor", "genops", "genops-no-record", "genops-no-export"}
    assert all(m["rps"] > 0 and m["proxy_us"] > 0 for m in figures["medians"].values())
    assert figures["medians"]["genops"]["store_us"] > 0
    # the no-record variant served every call and recorded none; the others recorded theirs
    recorded = figures["calls_recorded"]
    assert recorded["genops-no-record"] == 0 and recorded["genops"] > 0 and recorded["genops-no-export"] > 0
    assert "request path (no-record - floor)" in result.stdout
