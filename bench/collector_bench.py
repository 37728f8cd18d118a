"""Run every benchmark once and print one JSON line per result: ``python bench/collector_bench.py [--smoke]``.

``--smoke`` runs each with a tiny load (for the test suite: it only checks they run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import proxy_p99


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny loads, just to check everything runs")
    args = parser.parse_args(argv)
    results = []
    if args.smoke:
        results.append({"bench": "ingest", **ingest.run(batches=4, connections=1)})
        for mode in ("off", "inline", "separate", "outproc"):
            results.append({"bench": "proxy_p99", **proxy_p99.run_mode(mode, rate=50, duration=1, warmup=0.5, smoke=True)})
    else:
        results.append({"bench": "ingest", **ingest.run(settle=5.0)})
        results.append({"bench": "ingest", **ingest.run(decode="python", settle=5.0)})
        for _round in range(3):
            for mode in ("off", "inline", "separate", "outproc"):
                results.append({"bench": "proxy_p99", **proxy_p99.run_mode(mode, rate=300, duration=15)})
    for result in results:
        print(json.dumps(result), flush=True)
    return results


if __name__ == "__main__":
    main()
