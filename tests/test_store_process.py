"""Where the embedded store runs: its own process (the proxy in a worker) or the proxy's process."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from conftest import start_proxy

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " not in stat  # a zombie has exited


def _call(proxy, content: str = "hello") -> str:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-store-secret", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    return raw.headers["GenOps-Request-Id"]


def _instance_pid(proxy, request_id: str) -> int:
    rows = proxy.wait_rows("SELECT ResourceAttributes['service.instance.id'] AS instance FROM otel_traces "
                           f"WHERE SpanAttributes['genops.request.id'] = '{request_id}'")
    return int(rows[0]["instance"].rsplit("-", 1)[1])


def test_separate_store_runs_the_proxy_in_a_worker_process(tmp_path, fake_upstream):
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "separate"})
    try:
        request_id = _call(proxy)
        workers = _children(proxy.process.pid)
        # The span was recorded by the worker (a child of `genops serve`), stored by the supervisor.
        assert _instance_pid(proxy, request_id) in workers
        assert (tmp_path / "data" / "spool-workers" / "worker-0").is_dir()
        metrics = urllib.request.urlopen(proxy.url + "/metrics", timeout=5).read().decode()
        assert 'genops_spans_received_total{source="proxy"} 1' in metrics
    finally:
        assert proxy.stop(signal.SIGTERM) == 0
    for pid in workers:
        assert not _alive(pid)


def _nice(pid: int, tid: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5): the nice value


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux: nice values per thread")
def test_the_store_yields_the_cpu_to_workers_and_restarted_workers_keep_their_priority(tmp_path, fake_upstream):
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "separate"})
    try:
        _call(proxy)
        supervisor = proxy.process.pid
        [worker] = _children(supervisor)
        threads = [int(t) for t in os.listdir(f"/proc/{supervisor}/task")]
        merges = [t for t in threads if Path(f"/proc/{supervisor}/task/{t}/comm").read_text().startswith("MergeMutate")]
        assert merges  # ClickHouse's merge threads, started by the store
        assert _nice(supervisor) == 10 and {_nice(supervisor, t) for t in merges} == {10}
        assert _nice(worker) == 0
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and [p for p in _children(supervisor) if p != worker and _alive(p)] == []:
            time.sleep(0.1)
        [restarted] = [p for p in _children(supervisor) if p != worker]
        assert _nice(restarted) == 0
        while True:  # and it serves, once it listens
            try:
                _call(proxy)
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        assert proxy.stop(signal.SIGTERM) == 0


def test_inline_store_keeps_one_process(tmp_path, fake_upstream):
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "inline"})
    try:
        request_id = _call(proxy)
        assert _instance_pid(proxy, request_id) == proxy.process.pid
        assert _children(proxy.process.pid) == []
    finally:
        assert proxy.stop(signal.SIGTERM) == 0


def test_internal_endpoints_refuse_requests_without_the_secret(tmp_path, fake_upstream):
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                            "GENOPS_STORE_PROCESS": "separate"})
    try:
        internal = json.loads((tmp_path / "data" / "serve.json").read_text())["url"]
        row = b'{"TraceId":"forged"}'
        for base in (internal, proxy.url):  # direct, and through the worker's admin forwarding
            for path in ("/genops/internal/rows", "/genops/internal/report"):
                request = urllib.request.Request(
                    base + path, data=row, method="POST",
                    headers={"Authorization": f"Bearer {proxy.token}", "GenOps-Dedup-Token": "f" * 32})
                try:
                    urllib.request.urlopen(request, timeout=5)
                    raise AssertionError(f"{base}{path} accepted a request without the internal secret")
                except urllib.error.HTTPError as exc:
                    assert exc.code == 403
        assert proxy.sql("SELECT count() AS n FROM otel_traces") == [{"n": 0}]
    finally:
        proxy.stop(signal.SIGTERM)


@pytest.mark.parametrize("worker_index", [0, 3])
def test_worker_stops_when_the_supervisor_is_killed_and_its_spool_is_replayed(tmp_path, fake_upstream, worker_index):
    """SIGKILL of `genops serve`: the worker notices, spools what it holds and exits; the next
    start's worker of the same index replays it, or the supervisor itself when that index no
    longer runs (index 3: as after a restart with fewer --workers). The export interval is 10
    minutes, so nothing was sent before."""
    data = tmp_path / "data"
    env = {"GENOPS_OPENAI_BASE_URL": fake_upstream.url, "GENOPS_STORE_PROCESS": "separate",
           "GENOPS_EXPORT_INTERVAL_MS": "600000"}
    proxy = start_proxy(data, env)
    ids = [_call(proxy, f"m{i}") for i in range(5)]
    workers = _children(proxy.process.pid)
    assert len(workers) == 1
    proxy.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers[0]), "the orphaned worker kept running"
    spools = data / "spool-workers"
    if worker_index:
        (spools / "worker-0").rename(spools / f"worker-{worker_index}")
    again = start_proxy(data, {**env, "GENOPS_EXPORT_INTERVAL_MS": "100"})
    try:
        rows = again.wait_rows("SELECT SpanAttributes['genops.request.id'] AS id FROM otel_traces", 5)
        assert sorted(r["id"] for r in rows) == sorted(ids)
        if worker_index:
            deadline = time.monotonic() + 10
            while (spools / f"worker-{worker_index}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not (spools / f"worker-{worker_index}").exists(), "the drained orphan spool was left behind"
    finally:
        again.stop(signal.SIGTERM)


@pytest.mark.parametrize("mode", ["separate", "inline"])
def test_a_taken_port_is_an_error_not_a_restart_loop(tmp_path, fake_upstream, mode):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
        env.update({"GENOPS_DATA_DIR": str(tmp_path / "data"), "GENOPS_PORT": str(port), "GENOPS_OTLP_PORT": "0",
                    "GENOPS_STORE_PROCESS": mode, "GENOPS_OPENAI_BASE_URL": fake_upstream.url})
        done = subprocess.run([sys.executable, "-m", "genops", "serve"], env=env, capture_output=True, text=True,
                              timeout=90)
    assert done.returncode == 1
    assert "genops: " in done.stderr and ("cannot listen" in done.stderr or "right after starting" in done.stderr)
    assert f"{port}" in done.stderr


def test_a_worker_whose_supervisor_is_already_gone_stops(tmp_path, fake_upstream):
    """Even when the supervisor died before the worker started watching it (getppid() is then
    already another process's), the worker stops instead of serving on alone."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update({"GENOPS_DATA_DIR": str(tmp_path / "data"), "GENOPS_PORT": str(port), "GENOPS_OTLP_PORT": "0",
                "GENOPS_OPENAI_BASE_URL": fake_upstream.url, "GENOPS_SUPERVISOR_PID": str(gone.pid)})
    worker = subprocess.Popen([sys.executable, "-m", "genops", "serve", "--worker-admin-url", "http://127.0.0.1:9",
                               "--worker-index", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker kept running without its supervisor") from None
    assert b"supervisor gone" in worker.stderr.read()


@pytest.mark.parametrize("mode", ["separate", "inline"])
def test_a_query_reads_the_calls_answered_before_it(tmp_path, fake_upstream, mode):
    """The store inserts every GENOPS_EXPORT_INSERT_INTERVAL_MS (10 minutes here): a SQL query
    first inserts what is spooled, so a user who makes a call and then queries sees it."""
    proxy = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url, "GENOPS_STORE_PROCESS": mode,
                                            "GENOPS_EXPORT_INSERT_INTERVAL_MS": "600000"})
    try:
        request_id = _call(proxy, "read your writes")
        deadline = time.monotonic() + 30
        while _metric(proxy, "genops_spool_spans") < 1:  # in the store's spool, waiting for its insert
            assert time.monotonic() < deadline, "the span never reached the store's spool"
            time.sleep(0.05)
        rows = proxy.sql("SELECT SpanAttributes['genops.request.id'] AS id FROM otel_traces")
        assert [r["id"] for r in rows] == [request_id]
    finally:
        proxy.stop(signal.SIGTERM)


def _metric(proxy, name: str) -> float:
    with urllib.request.urlopen(proxy.url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
