"""A proxy worker's reports to its supervisor: the ids it served, as JSON built while it serves,
bounded while the supervisor is slow to take them."""

from __future__ import annotations

import orjson
import pytest
from test_span_buffer import spans

from genops.runtime import worker_report
from genops.runtime.worker_report import WorkerReporter

pytestmark = pytest.mark.unit


def test_a_report_carries_every_served_id_and_the_pipeline_state() -> None:
    reporter = WorkerReporter("http://127.0.0.1:1", "secret", 3, None)
    ended = spans(5)
    for span in ended:
        reporter.on_end(span)
    report = orjson.loads(reporter.take_report({"queued": 7}))
    assert report["worker"] == 3 and report["pipeline"] == {"queued": 7}
    contexts = [span.get_span_context() for span in ended]
    assert report["served"] == [[f"req-{i}", f"{c.trace_id:032x}", f"{c.span_id:016x}"] for i, c in enumerate(contexts)]
    assert orjson.loads(reporter.take_report({}))["served"] == [], "each id is reported once"


def test_ids_beyond_the_bound_are_not_kept_while_a_report_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_report, "MAX_SERVED_BYTES", 300)  # room for ~3 ids
    reporter = WorkerReporter("http://127.0.0.1:1", "secret", 0, None)
    for span in spans(50):
        reporter.on_end(span)
    served = orjson.loads(reporter.take_report({}))["served"]
    entry = len(orjson.dumps(served[0])) + 1  # every id of these spans has the same length
    assert len(served) == -(-300 // entry) < 50, "kept until the bound was reached, then no more"
    assert [s[0] for s in served] == [f"req-{i}" for i in range(len(served))]
    for span in spans(2):  # the next report collects again
        reporter.on_end(span)
    assert [s[0] for s in orjson.loads(reporter.take_report({}))["served"]] == ["req-0", "req-1"]
