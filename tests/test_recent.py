"""The proxy's memory of the calls it just served (feedback that arrives before the span is stored)."""

from __future__ import annotations

import pytest

from genops.proxy.recent import RecentCalls
from genops.storage.scores import SpanRef

pytestmark = pytest.mark.unit


def ref(n: int, trace: int | None = None) -> SpanRef:
    return SpanRef(f"{trace if trace is not None else n:032x}", f"{n:016x}")


def test_the_oldest_calls_are_forgotten_first_and_a_repeated_id_counts_as_new() -> None:
    recent = RecentCalls(capacity=3)
    for n in range(3):
        recent.add(f"req-{n}", ref(n))
    recent.add("req-0", ref(10))  # served again: now the newest, with its new span
    recent.add("req-3", ref(3))
    assert recent.request("req-1") is None, "the oldest one went"
    assert recent.request("req-0") == ref(10) and recent.request("req-2") == ref(2) and recent.request("req-3") == ref(3)
    assert not recent.has_trace(f"{1:032x}") and recent.has_trace(f"{10:032x}")


def test_a_trace_seen_again_stays_while_older_traces_go() -> None:
    recent = RecentCalls(capacity=2)
    recent.add("a", ref(1, trace=7))
    recent.add("b", ref(2, trace=8))
    recent.add("c", ref(3, trace=7))  # the agent's trace 7 again: it is recent, 8 is the oldest now
    recent.add("d", ref(4, trace=9))
    assert recent.has_trace(f"{7:032x}") and recent.has_trace(f"{9:032x}") and not recent.has_trace(f"{8:032x}")


def test_long_churn_keeps_exactly_the_latest_calls() -> None:
    recent = RecentCalls(capacity=1000)
    for n in range(100_000):  # a hundred times the capacity, as a busy proxy does within minutes
        recent.add(f"req-{n}", ref(n))
    assert recent.request("req-98999") is None and recent.request("req-99000") == ref(99000)
    assert recent.request("req-99999") == ref(99999)
    assert len(recent._requests) == len(recent._traces) == 1000  # the bound itself
