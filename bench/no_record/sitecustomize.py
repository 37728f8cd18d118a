"""Bench only (``bench/decompose.py``): a ``genops serve`` worker whose record stage does nothing.

Put this folder on ``PYTHONPATH`` with ``GENOPS_BENCH_NO_RECORD=1``: in each proxy worker,
``RecordStage.schedule`` then returns at once, so no call's span ends (no safety scan after the
answer, no attributes, cost, metrics or export). What a worker then costs per call is GenOps's
request path without its recording. Never for real traffic: nothing is recorded.
"""

import os
import sys

if os.environ.get("GENOPS_BENCH_NO_RECORD") == "1" and "--worker-admin-url" in sys.argv:
    from genops.proxy.stages.record import RecordStage

    RecordStage.schedule = lambda self, exchange: None  # type: ignore[method-assign]
