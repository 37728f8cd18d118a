"""The benchmarks run (tiny loads; no timing is asserted: figures belong in bench/ output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parent.parent / "bench" / "collector_bench.py"


@pytest.mark.slow
def test_benchmarks_run_in_smoke_mode() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ingest = next(r for r in results if r["bench"] == "ingest")
    assert ingest["spans"] == 4 * 512 and ingest["spans_per_cpu_second"]
    modes = {r["mode"]: r for r in results if r["bench"] == "proxy_p99"}
    assert set(modes) == {"off", "inline", "separate", "outproc"}
    assert all(r["requests"] > 0 and r["p99_ms"] > 0 for r in modes.values())
    for mode in ("inline", "separate"):
        assert modes[mode]["spans_exported"] >= modes[mode]["requests"]
    assert modes["separate"]["store_cpu_ms_per_request"] > 0  # the store ran in its own process
