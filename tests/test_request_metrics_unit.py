"""RequestMetrics alone: which spans it counts, and client-chosen labels kept bounded."""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

import pytest

from genops.api.request_metrics import MAX_LABEL_CHARS, MAX_MODELS, OTHER, RequestMetrics, status_class

pytestmark = pytest.mark.unit


class _Span:
    """What RequestMetrics reads of a finished span."""

    def __init__(self, attributes: dict[str, Any], start: int = 0, end: int = 2_000_000_000) -> None:
        self.attributes = MappingProxyType(attributes)
        self.start_time, self.end_time = start, end


def _call(model: str, status: int = 200, **extra: Any) -> _Span:
    return _Span({"genops.route": "openai", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                  "http.response.status_code": status, "genops.upstream.url": "http://up/v1", **extra})


def test_client_chosen_models_and_error_types_stay_bounded() -> None:
    metrics = RequestMetrics()
    for i in range(MAX_MODELS + 20):
        metrics.on_end(_call(f"model-{i}"))  # type: ignore[arg-type]
    metrics.on_end(_call("x" * 500, 429, **{"error.type": "rate_limited"}))  # type: ignore[arg-type]
    metrics.on_end(_call("model-0"))  # type: ignore[arg-type]
    models: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "genops_requests_total":
                models[s.labels["model"]] = models.get(s.labels["model"], 0) + s.value
    assert len(models) == MAX_MODELS + 1 and models[OTHER] == 21  # 20 late names and the long one
    assert models["model-0"] == 2
    errors = [s.labels["error_type"] for family in metrics.registry.collect() if family.name == "genops_request_errors"
              for s in family.samples if s.name == "genops_request_errors_total"]
    assert errors == ["rate_limited"]


def test_long_names_are_cut_and_statuses_grouped() -> None:
    metrics = RequestMetrics()
    metrics.on_end(_call("x" * 500, 503))  # type: ignore[arg-type]
    (sample,) = [s for family in metrics.registry.collect() for s in family.samples if s.name == "genops_requests_total"]
    assert sample.labels["model"] == "x" * MAX_LABEL_CHARS and sample.labels["status"] == "5xx"
    assert [status_class(c) for c in (200, 201, 404, 429, 500, None, 0)] == ["2xx", "2xx", "4xx", "4xx", "5xx", "none", "other"]


def test_spans_that_are_not_proxied_calls_are_not_counted() -> None:
    metrics = RequestMetrics()
    metrics.on_end(_Span({"gen_ai.request.model": "gpt-4o"}))  # type: ignore[arg-type]
    metrics.on_end(_call("gpt-4o", 200, **{"genops.latency.ttft_ms": 250.0}))  # type: ignore[arg-type]
    samples = {(s.name, s.labels.get("le")): s.value for family in metrics.registry.collect() for s in family.samples}
    assert samples[("genops_requests_total", None)] == 1
    assert samples[("genops_request_duration_seconds_sum", None)] == 2.0
    assert samples[("genops_time_to_first_token_seconds_bucket", "0.25")] == 1
    assert samples[("genops_time_to_first_token_seconds_bucket", "0.1")] == 0


def test_a_worker_file_still_being_created_does_not_break_the_sum(tmp_path) -> None:
    """A starting worker's metrics file is empty for a moment; the supervisor's /metrics must still answer
    (prometheus_client's reader raises struct.error on it: a 500 was seen in a CI run)."""
    import subprocess
    import sys

    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from genops.api.request_metrics import multiprocess_collector

    # a real worker's file: a counter written by another process in multiprocess mode
    code = ("from prometheus_client import Counter; Counter('genops_requests', 'calls').inc(3)")
    subprocess.run([sys.executable, "-c", code], env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, check=True)
    (tmp_path / "counter_99999.db").write_bytes(b"")  # the next worker's file, just created
    registry = CollectorRegistry()
    collector = multiprocess_collector(tmp_path)
    assert collector is not None
    registry.register(collector)
    assert "genops_requests_total 3.0" in generate_latest(registry).decode()


def test_a_worker_s_cached_process_id_follows_a_fork(tmp_path):
    """cache_pid_in_values (a worker's metrics without a getpid system call per increment) keeps
    prometheus_client's rule: a forked child writes its own file, so both processes' counts add up."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os
        from genops.api.request_metrics import cache_pid_in_values
        cache_pid_in_values()
        from prometheus_client import CollectorRegistry, Counter
        from prometheus_client.multiprocess import MultiProcessCollector
        counter = Counter("forked_calls", "calls", registry=CollectorRegistry())
        counter.inc()
        child = os.fork()
        if child == 0:
            counter.inc(10)
            os._exit(0)
        os.waitpid(child, 0)
        counter.inc(100)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(registry.get_sample_value("forked_calls_total"), len(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    total, files = out.stdout.split()
    assert float(total) == 111.0 and int(files) == 2


def _exposition(registry: Any) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples}


def test_observing_many_at_once_matches_observing_each() -> None:
    """observe_all (a flush's one write per bucket) against prometheus_client's own observe, the
    reference: the same counts in every bucket, amounts on a bound included, and the same sum."""
    from prometheus_client import CollectorRegistry, Histogram

    from genops.api.request_metrics import DURATION_BUCKETS, observe_all

    amounts = [0.0, 0.05, 0.0500001, 0.1, 2.5, 159.9, 160.0, 160.5, 1e9, -1.0, 0.001] + [i / 997 for i in range(300)]
    each, many = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "h", ["route"], buckets=DURATION_BUCKETS, registry=each).labels("openai")
    for amount in amounts:
        reference.observe(amount)
    observe_all(Histogram("h", "h", ["route"], buckets=DURATION_BUCKETS, registry=many).labels("openai"), amounts)
    expected, got = _exposition(each), _exposition(many)
    sums = [key for key in expected if key[0] == "h_sum"]
    assert got[sums[0]] == pytest.approx(expected[sums[0]], rel=1e-12)  # float sums in another order
    assert {k: v for k, v in got.items() if k not in sums} == {k: v for k, v in expected.items() if k not in sums}
    assert len(expected) == len(DURATION_BUCKETS) + 3  # every bucket, +Inf, the count and the sum compared


def test_counts_wait_for_the_loop_but_a_read_of_the_registry_sees_every_call() -> None:
    """On an event loop, on_end only notes the call: the values are written once per FLUSH_S (a
    scheduled flush), and a read of this process's registry writes them first."""
    import asyncio

    from genops.api import request_metrics

    async def scenario() -> tuple[float, float, float, float]:
        metrics = RequestMetrics()
        child = metrics.requests.labels("openai", "openai", "gpt-4o", "2xx")
        for _ in range(3):
            metrics.on_end(_call("gpt-4o"))  # type: ignore[arg-type]
        unwritten = child._value.get()
        read = _exposition(metrics.registry)[("genops_requests_total", frozenset(
            {"route": "openai", "provider": "openai", "model": "gpt-4o", "status": "2xx"}.items()))]
        metrics.on_end(_call("gpt-4o"))  # type: ignore[arg-type]
        before = child._value.get()
        for _ in range(200):  # the scheduled flush, FLUSH_S after the call
            await asyncio.sleep(request_metrics.FLUSH_S / 4)
            if child._value.get() == 4:
                break
        return unwritten, read, before, child._value.get()

    unwritten, read, before, after = asyncio.run(scenario())
    assert (unwritten, read, before, after) == (0, 3, 3, 4)


def test_shutdown_writes_what_is_pending() -> None:
    import asyncio

    async def scenario() -> RequestMetrics:
        metrics = RequestMetrics()
        metrics.on_end(_call("gpt-4o", 500, **{"error.type": "boom"}))  # type: ignore[arg-type]
        metrics.shutdown()  # the worker's exit: provider.shutdown() before its loop closes
        return metrics

    metrics = asyncio.run(scenario())
    child = metrics.requests.labels("openai", "openai", "gpt-4o", "5xx")
    assert child._value.get() == 1
    assert metrics.duration.labels("openai", "openai", "gpt-4o", "5xx")._sum.get() == 2.0
