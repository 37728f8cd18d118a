"""``genops trace`` on a seeded agent run with nested sessions, and docs/sql-cookbook.md's SQL on seeded data.

The store is seeded by a separate process (tests/seed_sessions.py: chDB locks its directory
to one process); ``genops trace`` runs first with no server (direct), then through a real
``genops serve`` on the same directory (SQL endpoint), and both must print the same tree.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import seed_sessions as seed
from conftest import Proxy, start_proxy, upstream_env

from genops import semconv as sc

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
TRACE_IDS = (seed.SESSION, "req-research-1", seed.T1, "req-ab-4")


def genops(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "genops", *args], env=env, cwd=str(data_dir), capture_output=True,
                          text=True, timeout=120)


@dataclass
class Seeded:
    proxy: Proxy
    offline: dict[str, str]  # genops trace output with no server running


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, fake_upstream) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp("seeded")
    subprocess.run([sys.executable, str(Path(__file__).with_name("seed_sessions.py")), str(data_dir)], check=True,
                   timeout=120)
    offline = {}
    for ident in TRACE_IDS:
        done = genops(data_dir, "trace", ident)
        assert done.returncode == 0, done.stderr
        offline[ident] = done.stdout
    proxy = start_proxy(data_dir, upstream_env(fake_upstream.url))
    yield Seeded(proxy, offline)
    proxy.stop()


EXPECTED_SESSION_TREE = """\
session trip-42 (Trip to Lisbon) · user alice · 2 traces · 4 calls · 1 error · 620 in / 270 out tokens · $0.000913 · 5.10 s
└─ /planner  (4 calls · 1 error · 620 in / 270 out tokens · $0.000913 · 5.10 s)
   ├─ invoke_agent planner  4.00 s  ★ task_success=true
   │  ├─ chat gpt-4o  800 ms  120 in / 40 out  $0.000700  prompt trip-plan@v2  req req-plan-1  ★ thumbs_up=true
   │  ├─ execute_tool web_search  600 ms
   │  └─ invoke_agent researcher  2.00 s  [/planner/researcher]
   │     ├─ chat gpt-4o-mini  1.20 s  300 in / 80 out  $0.000093  req req-research-1  ★ relevance=0.8 (eval)
   │     └─ chat gpt-4o-mini  500 ms  ERROR rate_limit_exceeded (HTTP 429)  req req-research-2
   └─ /planner/writer  (1 call · 200 in / 150 out tokens · $0.000120 · 900 ms)
      └─ chat gpt-4o-mini  900 ms  200 in / 150 out  $0.000120  req req-write-1
"""


def test_trace_prints_the_session_tree_with_and_without_serve(seeded):
    done = genops(seeded.proxy.data_dir, "trace", seed.SESSION)
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED_SESSION_TREE
    assert seeded.offline[seed.SESSION] == EXPECTED_SESSION_TREE
    for ident in TRACE_IDS[1:]:
        assert genops(seeded.proxy.data_dir, "trace", ident).stdout == seeded.offline[ident]


def test_trace_by_request_and_trace_id(seeded):
    by_request = seeded.offline["req-research-1"].splitlines()
    assert by_request[0].startswith(f"request req-research-1 · trace {seed.T1} · session trip-42 · user alice · "
                                    "3 calls · 1 error · 420 in / 120 out tokens · $0.000793 · 4.00 s")
    marked = [line for line in by_request if line.endswith("◀")]
    assert len(marked) == 1 and "req req-research-1" in marked[0]
    assert "/planner/writer" not in seeded.offline["req-research-1"]  # another trace of the session
    assert seeded.offline[seed.T1].splitlines()[1:] == [line.removesuffix("  ◀") for line in by_request[1:]]
    assert "ERROR rate_limit_exceeded" in seeded.offline["req-ab-4"]

    for ident in ("no-such-id", "x' OR 1=1 --", "a\\'b"):
        missing = genops(seeded.proxy.data_dir, "trace", ident)
        assert missing.returncode == 1 and "no trace, session or request" in missing.stderr, missing.stderr


def readme_sql(name: str) -> str:
    """The query of the ``<!-- sql:name -->`` block in docs/sql-cookbook.md."""
    text = (ROOT / "docs" / "sql-cookbook.md").read_text()
    match = re.search(rf"<!-- sql:{name} -->\n```sql\n(.*?)```", text, re.S)
    assert match, f"docs/sql-cookbook.md has no sql:{name} block"
    return match.group(1)


def proxy_calls() -> list[seed.SeedSpan]:
    return [s for s in seed.SPANS if s.scope == sc.PROXY_SCOPE]


def latest_thumbs() -> dict[str, float]:
    latest: dict[str, tuple[float, float]] = {}
    for score in seed.SCORES:
        if score.name == "thumbs_up" and score.request_id:
            if score.request_id not in latest or score.at_ms >= latest[score.request_id][0]:
                latest[score.request_id] = (score.at_ms, score.value)
    return {rid: value for rid, (_, value) in latest.items()}


def expected_variants(key) -> dict[str, dict]:
    thumbs = latest_thumbs()
    groups: dict[str, list[seed.SeedSpan]] = {}
    for span in proxy_calls():
        variant = key(span)
        if variant:
            groups.setdefault(variant, []).append(span)
    out = {}
    for variant, spans in groups.items():
        rids = [s.attrs[sc.GENOPS_REQUEST_ID] for s in spans]
        scored = [thumbs[r] for r in rids if r in thumbs]
        out[variant] = {
            "calls": len(spans),
            "cost_per_call": round(sum(s.attrs.get(sc.GENOPS_COST_USD, 0) for s in spans) / len(spans), 6),
            "mean_feedback": round(sum(scored) / len(scored), 3),
            "scored_calls": len(scored),
            "error_rate": round(sum(1 for s in spans if sc.ERROR_TYPE in s.attrs) / len(spans), 4),
            "durations_ms": sorted(s.duration_ms for s in spans),
        }
    return out


@pytest.mark.parametrize("block, key", [
    ("ab-prompt", lambda s: s.attrs.get(sc.GENOPS_PROMPT_VERSION) if s.attrs.get(sc.GENOPS_PROMPT_ID) == seed.AB_PROMPT
     else None),
    ("ab-model", lambda s: s.attrs[sc.GEN_AI_REQUEST_MODEL]),
])
def test_readme_ab_query_returns_one_row_per_variant(seeded, block, key):
    rows = seeded.proxy.sql(readme_sql(block))
    expected = expected_variants(key)
    assert [r["variant"] for r in rows] == sorted(expected)
    for row in rows:
        want = expected[row["variant"]]
        assert {k: row[k] for k in ("calls", "scored_calls", "error_rate")} == \
            {k: want[k] for k in ("calls", "scored_calls", "error_rate")}
        assert row["cost_per_call"] == pytest.approx(want["cost_per_call"], abs=1e-6)
        assert row["mean_feedback"] == pytest.approx(want["mean_feedback"], abs=1e-3)
        durations = want["durations_ms"]
        assert durations[math.floor(0.9 * (len(durations) - 1))] <= row["p95_ms"] <= durations[-1]


def test_readme_session_and_user_queries(seeded):
    by_session: dict[str, list[seed.SeedSpan]] = {}
    by_user: dict[str, list[seed.SeedSpan]] = {}
    for span in proxy_calls():
        by_session.setdefault(span.attrs[sc.GEN_AI_CONVERSATION_ID], []).append(span)
        by_user.setdefault(span.attrs[sc.GENOPS_USER_ID], []).append(span)

    def cost(spans):
        return sum(s.attrs.get(sc.GENOPS_COST_USD, 0) for s in spans)

    sessions = {r["session"]: r for r in seeded.proxy.sql(readme_sql("per-session"))}
    assert set(sessions) == set(by_session)
    for name, spans in by_session.items():
        row = sessions[name]
        assert row["calls"] == len(spans)
        assert row["errors"] == sum(1 for s in spans if sc.ERROR_TYPE in s.attrs)
        assert row["cost_usd"] == pytest.approx(cost(spans), abs=1e-6)
        wall = max(s.start_ms + s.duration_ms for s in spans) - min(s.start_ms for s in spans)
        assert row["wall_s"] == pytest.approx(wall / 1000, abs=0.01)

    users = seeded.proxy.sql(readme_sql("top-users"))
    assert [r["user"] for r in users] == sorted(by_user, key=lambda u: -cost(by_user[u]))
    for row in users:
        assert row["calls"] == len(by_user[row["user"]])
        assert row["cost_usd"] == pytest.approx(cost(by_user[row["user"]]), abs=1e-6)


def test_feedback_for_stored_ids_this_proxy_never_served(seeded):
    """Ids not in the proxy's recent memory are looked up in storage (calls table and trace index)."""
    from test_feedback import feedback

    status, body = feedback(seeded.proxy, [{"request_id": "req-write-1", "name": "thumbs_up", "value": False},
                                           {"trace_id": seed.T2, "name": "task_success", "value": 0.5,
                                            "source": "eval"}])
    assert status == 201, body
    assert [(s["trace_id"], s["span_id"]) for s in body["scores"]] == [(seed.T2, "0000000000000007"), (seed.T2, None)]
    done = genops(seeded.proxy.data_dir, "trace", seed.T2)
    assert "★ task_success=0.5 (eval), thumbs_up=false" in done.stdout, done.stdout


def test_trace_of_a_live_session_through_the_proxy(seeded, fake_upstream):
    """Calls made now through the proxy (nested session paths, a traceparent from the seeded agent span).
    Last in the module: it adds calls the cookbook-query expectations above do not count."""
    proxy = seeded.proxy

    def client(path: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, default_headers={
            "GenOps-Session-Id": "live-1", "GenOps-User-Id": "zoe", "GenOps-Session-Path": path, **headers})

    messages = [{"role": "user", "content": "hi"}]
    a = client("/planner").chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    b = client("/planner/helper").chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    # a sub-agent that passes on the trace context the proxy returned for call a
    c = client("/planner/helper", traceparent=a.headers["traceparent"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages)
    proxy.wait_rows("SELECT 1 FROM genops_calls WHERE SessionId = 'live-1'", 3)
    ids = [r.headers["genops-request-id"] for r in (a, b, c)]

    done = genops(proxy.data_dir, "trace", "live-1")
    assert done.returncode == 0, done.stderr
    shape = [re.sub(r"  \d.*?(req \S+).*$", r"  \1", line) for line in done.stdout.splitlines()[1:]]
    assert done.stdout.startswith("session live-1 · user zoe · 2 traces · 3 calls · ")
    assert shape == [
        "└─ /planner  (3 calls · " + shape[0].split(" · ", 1)[1],
        f"   ├─ chat gpt-4o-mini  req {ids[0]}",
        f"   │  └─ chat gpt-4o-mini  req {ids[2]}",
        "   └─ /planner/helper  (1 call · " + shape[3].split(" · ", 1)[1],
        f"      └─ chat gpt-4o-mini  req {ids[1]}",
    ]
    assert done.stdout.splitlines()[3].endswith("[/planner/helper]")
