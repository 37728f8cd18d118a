"""Request metrics on ``/metrics``: counts, latency histograms, errors and TTFT by route, provider,
model and status, from a real ``genops serve`` (in one process, and added up over ``--workers 2``)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from conftest import FakeUpstream, Proxy, start_proxy
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

OK = {"route": "openai", "provider": "openai", "model": "gpt-4o-mini", "status": "2xx"}
FAILED = {**OK, "status": "5xx"}
MODEL = {"route": "openai", "provider": "openai", "model": "gpt-4o-mini"}


def scrape(url: str) -> tuple[str, dict[tuple[str, frozenset], float]]:
    """``/metrics`` as text and as samples keyed by (name, labels)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Spans end just after their response is sent: wait for the counts to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def make_calls(proxy: Proxy, plain: int, streamed: int) -> None:
    """``plain`` and ``streamed`` successful calls, then one the upstream answers with a 500."""
    for i in range(plain):  # a new client (connection) per call lets the kernel spread them over workers
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"p{i}"}])
    for i in range(streamed):
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0) as client:
            chunks = list(client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"s{i}"}], stream=True,
                stream_options={"include_usage": True}))
            assert len(chunks) > 2
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0) as client, \
            pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "boom"}],
                                       extra_headers={"X-Fake-Status": "500"})


def check_request_metrics(text: str, samples: dict[tuple[str, frozenset], float], plain: int, streamed: int) -> None:
    ok = plain + streamed
    assert value(samples, "genops_requests_total", **OK) == ok
    assert value(samples, "genops_requests_total", **FAILED) == 1
    # Latency histograms: every call in +Inf and _count, buckets cumulative, a duration summed.
    for labels, n in ((OK, ok), (FAILED, 1)):
        assert value(samples, "genops_request_duration_seconds_count", **labels) == n
        assert value(samples, "genops_request_duration_seconds_bucket", **labels, le="+Inf") == n
        assert value(samples, "genops_request_duration_seconds_sum", **labels) > 0
        buckets = sorted((float(dict(key)["le"]), v) for (name, key), v in samples.items()
                         if name == "genops_request_duration_seconds_bucket" and dict(key).items() >= labels.items())
        assert len(buckets) == 13 and [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert value(samples, "genops_request_errors_total", route="openai", provider="openai",
                 error_type="server_error") == 1
    assert sum(v for (name, _), v in samples.items() if name == "genops_request_errors_total") == 1
    # Every call reached the upstream; only the streamed ones have a first token.
    assert value(samples, "genops_upstream_duration_seconds_count", **MODEL) == ok + 1
    assert value(samples, "genops_time_to_first_token_seconds_count", **MODEL) == streamed
    assert value(samples, "genops_time_to_first_token_seconds_bucket", **MODEL, le="+Inf") == streamed
    assert "_created" not in text
    # The pipeline's metrics are still there, unchanged in name and type.
    assert "# TYPE genops_spans_received_total counter" in text
    assert "# TYPE genops_export_latency_seconds histogram" in text
    assert "# TYPE genops_spool_spans gauge" in text


def test_request_metrics_in_one_process(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "inline"})
    try:
        make_calls(proxy, plain=3, streamed=2)
        until(lambda: value(scrape(proxy.url)[1], "genops_requests_total", **FAILED) == 1, "the calls are counted")
        until(lambda: value(scrape(proxy.url)[1], "genops_spans_received_total", source="proxy") == 6,
              "the spans are counted")
        text, samples = scrape(proxy.url)
        check_request_metrics(text, samples, plain=3, streamed=2)
        assert not (tmp_path / "data" / "metrics").exists(), "one process: no multiprocess files"
    finally:
        assert proxy.stop(signal.SIGTERM) == 0


def test_request_metrics_without_export(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    """Spans not stored (GENOPS_EXPORT_ENABLED=false): the calls are still counted."""
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "inline", "GENOPS_EXPORT_ENABLED": "false"})
    try:
        make_calls(proxy, plain=1, streamed=1)
        until(lambda: value(scrape(proxy.url)[1], "genops_requests_total", **FAILED) == 1, "the calls are counted")
        text, samples = scrape(proxy.url)
        check_request_metrics(text, samples, plain=1, streamed=1)
    finally:
        assert proxy.stop(signal.SIGTERM) == 0


def test_request_metrics_added_up_over_two_workers(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    data = tmp_path / "data"
    env = {"GENOPS_OPENAI_BASE_URL": fake_upstream.url}
    proxy = start_proxy(data, env, args=("--workers", "2"))
    try:
        make_calls(proxy, plain=20, streamed=4)
        until(lambda: value(scrape(proxy.url)[1], "genops_requests_total", **OK) == 24
              and value(scrape(proxy.url)[1], "genops_requests_total", **FAILED) == 1, "every worker's calls are counted")
        text, samples = scrape(proxy.url)
        check_request_metrics(text, samples, plain=20, streamed=4)
        assert value(samples, "genops_spans_forwarded_total") >= 0  # the workers' pipelines still reported
        # Both workers served calls and wrote their own files; the supervisor's /metrics is their sum.
        pids = {name.split("_")[-1].split(".")[0] for name in os.listdir(data / "metrics") if name.startswith("counter_")}
        assert len(pids) == 2, pids
    finally:
        assert proxy.stop(signal.SIGTERM) == 0
    # A new start counts from zero: the previous run's files are gone.
    proxy = start_proxy(data, env, args=("--workers", "2"))
    try:
        _, samples = scrape(proxy.url)
        assert not [key for key in samples if key[0] == "genops_requests_total"]
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
        until(lambda: value(scrape(proxy.url)[1], "genops_requests_total", **OK) == 1, "the new run's call")
    finally:
        assert proxy.stop(signal.SIGTERM) == 0
