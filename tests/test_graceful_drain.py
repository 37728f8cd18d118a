"""Graceful drain on SIGTERM and rolling restart on SIGHUP, under load (runtime/drain.py, runtime/workers.py).

A load of chat calls (bench/drain_load.py: ~150/s, open loop, kept-alive connections and
slow streams in flight) runs against a real ``genops serve`` while it is signalled. Each call
ends ``ok`` or ``refused`` (its connection was refused: it never reached the proxy); a call
the proxy had accepted and did not complete (reset, cut-off stream) fails the test. After
the process exits, the store (opened by ``genops sql``, as a user would) holds exactly one
span per completed call. Timings are never asserted: deadlines only guard against hangs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import FakeUpstream, Proxy, start_proxy, upstream_env
from test_cli import genops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from drain_load import DrainLoad

from genops.runtime.drain import accept_queue_length, drop_new_connections

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RATE = 100  # calls per second; one in ten a stream of ~1.5 s


def _load(proxy: Proxy) -> DrainLoad:
    port = int(proxy.url.rsplit(":", 1)[1])
    return DrainLoad("127.0.0.1", port, rate=RATE, stream_every=10, chunk_delay_ms=100).start()


def _stored(data_dir: Path, prefix: str) -> dict[str, int]:
    """Spans per request id, read from the store after the server exited."""
    result = genops("sql", "-f", "json",
                    "SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
                    f"WHERE startsWith(id, '{prefix}') GROUP BY id", env={"GENOPS_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    return {row["id"]: int(row["n"]) for row in json.loads(result.stdout or "[]")}


def _readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _workers(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return sorted(found)


def _wait_log(proxy: Proxy, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proxy.logs():
        assert proxy.process.poll() is None, proxy.logs()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s:\n{proxy.logs()[-3000:]}"
        time.sleep(0.1)


def _assert_no_call_lost(load: DrainLoad, stored: dict[str, int]) -> None:
    counts = load.counts()
    assert set(counts) <= {"ok", "refused"}, (counts, load.failures())
    assert counts["ok"] > 100 and sum(c.stream for c in load.calls if c.outcome == "ok") > 10, counts
    assert set(stored) == load.ok_ids(), "every completed call has a span, and no other call does"
    assert set(stored.values()) == {1}, "each stored once"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")
def test_a_listener_holding_new_connections_off_still_accepts_the_queued_ones() -> None:
    """The kernel mechanism the drain relies on: once SYNs are dropped, a new connection does not
    get in (it would be retried, then refused), while the one already queued is still served."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        queued = socket.create_connection(address, timeout=5)
        queued.sendall(b"request")
        deadline = time.monotonic() + 10
        while accept_queue_length(listener) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert drop_new_connections(listener)
        late = socket.socket()
        late.settimeout(0.3)  # the SYN is dropped: no answer (a client retries it a second later)
        with pytest.raises(socket.timeout):
            late.connect(address)
        late.close()
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.recv(16) == b"request"
            accepted.sendall(b"answer")
            assert queued.recv(16) == b"answer"
        queued.close()


def test_sigterm_under_load_fails_readiness_then_finishes_every_call(tmp_path: Path,
                                                                     fake_upstream: FakeUpstream) -> None:
    """One process (the store inline): SIGHUP reads the routes again and is not fatal; on SIGTERM /readyz
    answers 503 for the drain delay while calls are still served (with Connection: close), then the listener closes, the calls
    in flight finish (streams included) and every one of them is stored, once."""
    data_dir = tmp_path / "data"
    proxy = start_proxy(data_dir, {**upstream_env(fake_upstream.url), "GENOPS_STORE_PROCESS": "inline",
                                   "GENOPS_DRAIN_DELAY_S": "2"})
    try:
        proxy.process.send_signal(signal.SIGHUP)  # single process: nothing to restart; the routes are read again
        _wait_log(proxy, "routes reloaded")
        load = _load(proxy)
        time.sleep(1.5)
        proxy.process.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        status, body = _readyz(proxy.url)  # within the 2 s delay: still listening, not ready
        assert (status, body["status"]) == (503, "draining"), body
        draining_at = time.monotonic()  # the proxy drains from here on, whatever its signal took
        assert proxy.process.wait(60) == 0
        time.sleep(0.5)  # calls started now are refused
        load.stop()
    finally:
        proxy.stop(signal.SIGKILL)
    _assert_no_call_lost(load, _stored(data_dir, load.prefix))
    during_delay = [c for c in load.calls if draining_at < c.started < term_at + 1.5]
    assert during_delay and {c.outcome for c in during_delay} == {"ok"}, "served through the delay"
    assert all(c.closed for c in during_delay), "answers in the drain say Connection: close"
    assert not [c for c in load.calls if c.started < term_at and c.outcome != "ok"], "no call before SIGTERM refused"
    assert load.counts()["refused"] > 0, "the listener did close"


def rolling_restart_then_sigterm(tmp_path: Path, fake_upstream: FakeUpstream, workers: str) -> None:
    """The store in its own process, the proxy in worker(s): SIGHUP replaces every worker while
    calls keep coming (none refused, readiness never fails), then SIGTERM drains them all."""
    data_dir = tmp_path / "data"
    # The default export interval (conftest's 100 ms makes many small batches the store inserts one by one).
    proxy = start_proxy(data_dir, {**upstream_env(fake_upstream.url), "GENOPS_STORE_PROCESS": "separate",
                                   "GENOPS_EXPORT_INTERVAL_MS": "1000"}, args=("--workers", workers))
    readiness: list[int] = []
    watching = threading.Event()

    def watch_readiness() -> None:
        while not watching.is_set():
            readiness.append(_readyz(proxy.url)[0])
            time.sleep(0.05)

    try:
        before = _workers(proxy.process.pid)
        assert len(before) == int(workers)
        load = _load(proxy)
        watcher = threading.Thread(target=watch_readiness, daemon=True)
        watcher.start()
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGHUP)
        _wait_log(proxy, "rolling restart done")
        watching.set()
        watcher.join(10)
        after = _workers(proxy.process.pid)
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        assert proxy.process.wait(90) == 0
        time.sleep(0.3)
        load.stop()
    finally:
        proxy.stop(signal.SIGKILL)
    assert len(after) == int(workers) and not set(after) & set(before), (before, after)
    assert readiness and set(readiness) == {200}, "a rolling restart never fails readiness"
    _assert_no_call_lost(load, _stored(data_dir, load.prefix))
    # Calls before SIGTERM, the whole rolling restart included: all completed.
    assert not [c for c in load.calls if c.started < term_at - 1.0 and c.outcome != "ok"]


def test_rolling_restart_of_the_one_worker_then_sigterm_drop_no_call(tmp_path: Path,
                                                                      fake_upstream: FakeUpstream) -> None:
    """The default on 2+ cores (the store apart, one worker): SIGHUP replaces it without a refused
    call (the new worker binds the port next to the old one), and SIGTERM drains it.
    ``--workers 2``: tests/test_rolling_restart.py."""
    rolling_restart_then_sigterm(tmp_path, fake_upstream, "1")
